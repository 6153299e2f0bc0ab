//! Baselines for the classifier's benchmark (`cargo xtask bench`), in an object of their own
//! so that the object meshsim attaches to node ports holds only the classifier: what a
//! program costs when it does nothing (the test-run harness), and when it only reads the
//! clock (the floor under any shaped packet).
#![no_std]
#![no_main]
// The entry points `#[classifier]` generates take the kernel's raw context pointer.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext,
};

/// The harness's own cost: a classifier that does nothing.
#[classifier]
pub fn meshsim_empty(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// Reading the clock, which every shaped packet must do.
#[classifier]
pub fn meshsim_clock(_ctx: TcContext) -> i32 {
    // SAFETY: bpf_ktime_get_ns takes no arguments and only reads the monotonic clock.
    (unsafe { bpf_ktime_get_ns() } & 1) as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

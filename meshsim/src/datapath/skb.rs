//! The `__sk_buff` context that `BPF_PROG_TEST_RUN` takes and gives back.

/// Layout of the kernel's `struct __sk_buff` (uapi/linux/bpf.h). For a test run only `mark`,
/// `priority`, `ingress_ifindex`, `ifindex`, `cb`, `tstamp`, `wire_len`, `gso_segs`,
/// `gso_size` and `hwtstamp` may be non-zero (net/bpf/test_run.c, `convert___skb_to_skb`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkBuffCtx {
    pub len: u32,
    pub pkt_type: u32,
    pub mark: u32,
    pub queue_mapping: u32,
    pub protocol: u32,
    pub vlan_present: u32,
    pub vlan_tci: u32,
    pub vlan_proto: u32,
    pub priority: u32,
    pub ingress_ifindex: u32,
    pub ifindex: u32,
    pub tc_index: u32,
    pub cb: [u32; 5],
    pub hash: u32,
    pub tc_classid: u32,
    pub data: u32,
    pub data_end: u32,
    pub napi_id: u32,
    pub family: u32,
    pub remote_ip4: u32,
    pub local_ip4: u32,
    pub remote_ip6: [u32; 4],
    pub local_ip6: [u32; 4],
    pub remote_port: u32,
    pub local_port: u32,
    pub data_meta: u32,
    pub flow_keys: u64,
    pub tstamp: u64,
    pub wire_len: u32,
    pub gso_segs: u32,
    pub sk: u64,
    pub gso_size: u32,
    pub tstamp_type: u8,
    pub _pad: [u8; 3],
    pub hwtstamp: u64,
}

const _: () = assert!(core::mem::size_of::<SkBuffCtx>() == 192);
const _: () = assert!(core::mem::offset_of!(SkBuffCtx, tstamp) == 152);
const _: () = assert!(core::mem::offset_of!(SkBuffCtx, hwtstamp) == 184);

impl SkBuffCtx {
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C), integers only, size asserted; padding is explicit.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast(), size_of::<Self>()) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and every byte pattern is a valid value.
        unsafe { std::slice::from_raw_parts_mut((self as *mut Self).cast(), size_of::<Self>()) }
    }
}

use which::which;

/// Rebuild when bpf-linker changes: it links the classifier.
fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found: run ./x setup (or `cargo install bpf-linker`, see README)");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}

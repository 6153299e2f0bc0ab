use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The classifier needs a nightly whose LLVM matches bpf-linker's (see rust-toolchain.toml).
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-20";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "meshsim-ebpf")
        .ok_or_else(|| anyhow!("meshsim-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}

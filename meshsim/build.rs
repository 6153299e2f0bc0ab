use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The classifier needs a nightly whose LLVM matches bpf-linker's (see rust-toolchain.toml).
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-20";

/// The commit this is built from, for `meshsim --version`: `MESHSIM_COMMIT` when set (a
/// package built from a source tarball), else git's, with `-dirty` for uncommitted changes.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=MESHSIM_COMMIT");
    if let Ok(commit) = std::env::var("MESHSIM_COMMIT") {
        return commit;
    }
    // A new commit moves HEAD or the branch it names.
    for path in [
        "../.git/HEAD",
        "../.git/refs",
        "../.git/packed-refs",
        "../.git/index",
    ] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}-dirty") } else { hash }
        }
        None => "unknown".to_owned(),
    }
}

fn main() -> anyhow::Result<()> {
    // The canvas is embedded (rust-embed): a new file under web/ must rebuild us too.
    println!("cargo:rerun-if-changed=../web");
    println!("cargo:rustc-env=MESHSIM_COMMIT={}", commit());
    // aya-build writes nothing when asked to skip, but `include_bytes_aligned!` needs a file:
    // an empty one makes a quick `cargo check` work and loading fail with a clear error.
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
        for object in ["meshsim", "meshsim-baseline"] {
            std::fs::write(std::path::Path::new(&out_dir).join(object), [])?;
        }
    }
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
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}

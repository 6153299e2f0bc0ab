//! `cargo xtask install | uninstall | package`: meshsim on a system's PATH with its man pages,
//! shell completions and examples, removed again exactly; and the Debian package.
//!
//! Both lay the files out the same way: the release binary, `meshsim generate-files` (man
//! pages and completions from the command's own definition, in the tree the prefix wants)
//! and the examples, staged under `target/`. `install` copies the staged tree into the
//! prefix and writes a manifest of every file and every directory it made, which
//! `uninstall` reads back; `package` hands the tree to cargo-deb.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cargo;

/// Where `install` keeps its manifest, under the prefix.
const MANIFEST: &str = "share/meshsim/installed-files";

/// Builds the release binary and stages everything that goes under `prefix` in `stage`.
fn stage(prefix: &str, stage: &Path) -> Result<()> {
    cargo::run(&["build", "--release", "-p", "meshsim"])?;
    if stage.exists() {
        fs::remove_dir_all(stage).with_context(|| format!("emptying {}", stage.display()))?;
    }
    let binary = Path::new("target/release/meshsim");
    let status = Command::new(binary)
        .arg("generate-files")
        .arg(stage)
        .args(["--prefix", prefix])
        .status()
        .context("running meshsim generate-files")?;
    if !status.success() {
        bail!("meshsim generate-files failed ({status})");
    }
    let bin = stage.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(binary, bin.join("meshsim")).context("staging the binary")?;
    // The examples and the scenarios beside them (one level of folders).
    for (from, to) in [
        ("examples", "examples"),
        ("examples/scenarios", "examples/scenarios"),
    ] {
        let into = stage.join("share/doc/meshsim").join(to);
        fs::create_dir_all(&into)?;
        for entry in fs::read_dir(from).with_context(|| format!("reading {from}/"))? {
            let path = entry?.path();
            if path.is_file() {
                fs::copy(&path, into.join(path.file_name().unwrap_or_default()))
                    .with_context(|| format!("staging {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Every file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What a manifest lists: files, then the directories install made (deepest first).
struct Manifest {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Manifest {
    fn read(path: &Path) -> Result<Option<Manifest>> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut m = Manifest {
            files: Vec::new(),
            dirs: Vec::new(),
        };
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("file", p)) => m.files.push(p.into()),
                Some(("dir", p)) => m.dirs.push(p.into()),
                _ => bail!("{}: unreadable line {line:?}", path.display()),
            }
        }
        Ok(Some(m))
    }

    fn text(&self) -> String {
        let mut t = String::new();
        for f in &self.files {
            t += &format!("file {}\n", f.display());
        }
        for d in &self.dirs {
            t += &format!("dir {}\n", d.display());
        }
        t
    }
}

/// Makes `dir` and its missing parents, noting each one made.
fn make_dirs(dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_owned());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    made.extend(missing);
    Ok(())
}

pub fn install(prefix: &str) -> Result<()> {
    let staged = Path::new("target/install");
    stage(prefix, staged)?;
    let prefix_dir = Path::new(prefix);
    let manifest_path = prefix_dir.join(MANIFEST);
    let earlier = Manifest::read(&manifest_path)?;
    let ours = |p: &Path| {
        earlier
            .as_ref()
            .is_some_and(|m| m.files.iter().any(|f| f == p))
    };
    let mut manifest = Manifest {
        files: Vec::new(),
        dirs: earlier.as_ref().map(|m| m.dirs.clone()).unwrap_or_default(),
    };
    let relative = files_under(staged)?;
    // Nothing of anyone else's is overwritten: check every file before copying any.
    for rel in &relative {
        let to = prefix_dir.join(rel);
        if to.exists() && !ours(&to) {
            bail!(
                "{} exists and was not installed by ./x install: remove it (or the package \
                 that owns it) first",
                to.display()
            );
        }
    }
    for rel in &relative {
        let to = prefix_dir.join(rel);
        make_dirs(to.parent().unwrap_or(prefix_dir), &mut manifest.dirs)?;
        fs::copy(staged.join(rel), &to).with_context(|| format!("installing {}", to.display()))?;
        println!("installed {}", to.display());
        manifest.files.push(to);
    }
    make_dirs(
        manifest_path.parent().unwrap_or(prefix_dir),
        &mut manifest.dirs,
    )?;
    manifest.files.push(manifest_path.clone());
    fs::write(&manifest_path, manifest.text())
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    // A file of an earlier install that this one no longer has (a command removed).
    if let Some(earlier) = earlier {
        for f in earlier.files.iter().filter(|f| !manifest.files.contains(f)) {
            let _ = fs::remove_file(f);
        }
    }
    println!(
        "meshsim is installed in {prefix}: `meshsim --version`, `man meshsim`; \
         `sudo ./x uninstall` removes exactly these files"
    );
    Ok(())
}

pub fn uninstall(prefix: &str) -> Result<()> {
    let manifest_path = Path::new(prefix).join(MANIFEST);
    let Some(manifest) = Manifest::read(&manifest_path)? else {
        bail!(
            "{} does not exist: nothing was installed in {prefix} by ./x install",
            manifest_path.display()
        );
    };
    for f in &manifest.files {
        match fs::remove_file(f) {
            Ok(()) => println!("removed {}", f.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    // Directories install made, deepest first, if nothing else lives in them now.
    let mut dirs = manifest.dirs.clone();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        if fs::remove_dir(&d).is_ok() {
            println!("removed {}/", d.display());
        }
    }
    println!("meshsim is uninstalled from {prefix}");
    Ok(())
}

/// The `.deb`: the staged tree for `/usr`, through cargo-deb (its metadata, with the
/// dependencies and why, is in meshsim/Cargo.toml). Prints the package's path.
pub fn package() -> Result<PathBuf> {
    stage("/usr", Path::new("target/deb-files"))?;
    let out = Path::new("target/debian");
    fs::create_dir_all(out)?;
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["deb", "-p", "meshsim", "--no-build", "--output"])
        .arg(out)
        .output()
        .context("running cargo deb (./x package installs it)")?;
    if !output.status.success() {
        bail!(
            "cargo deb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // cargo-deb names it relative to the workspace; tests run elsewhere.
    let deb = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let deb = fs::canonicalize(&deb).with_context(|| format!("finding {deb}"))?;
    println!("{}", deb.display());
    Ok(deb)
}

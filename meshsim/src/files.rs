//! The files an installed meshsim brings besides its binary: man pages (one per command) and
//! shell completions, generated from the command's own definition (so they never disagree
//! with it), and where a system keeps them. `meshsim generate-files DIR --prefix P` writes
//! them for `./x install` and `./x package`; `meshsim check` says which are installed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap_complete::{Shell, generate_to};

/// The prefixes meshsim is installed under: `./x install`'s, then the Debian package's.
const PREFIXES: [&str; 2] = ["/usr/local", "/usr"];

/// Writes the man pages (`meshsim.1`, `meshsim-up.1`, ...) and the completions for bash,
/// zsh and fish into `dir`, laid out as they go under `prefix` (`dir/share/man/man1/...`),
/// so an installer copies the tree as it is.
pub fn generate(mut command: clap::Command, dir: &Path, prefix: &str) -> Result<()> {
    let raw = dir.join(".generated");
    fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
    clap_mangen::generate_to(command.clone(), &raw)
        .with_context(|| format!("writing the man pages into {}", raw.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        generate_to(shell, &mut command, "meshsim", &raw)
            .with_context(|| format!("writing the {shell} completions into {}", raw.display()))?;
    }
    for entry in fs::read_dir(&raw).with_context(|| format!("reading {}", raw.display()))? {
        let from = entry?.path();
        let file = from.file_name().unwrap_or_default().to_string_lossy();
        let (place, name) = place_of(&file, prefix)
            .with_context(|| format!("{file} has no place in an installation"))?;
        let to_dir = dir.join(place.strip_prefix(prefix).unwrap_or(&place));
        fs::create_dir_all(&to_dir).with_context(|| format!("creating {}", to_dir.display()))?;
        fs::rename(&from, to_dir.join(&name))
            .with_context(|| format!("moving {} into {}", from.display(), to_dir.display()))?;
    }
    fs::remove_dir(&raw).with_context(|| format!("removing {}", raw.display()))
}

/// Where a generated file goes under `prefix`, and its name there; `None` for a file that
/// is not one of ours.
pub fn place_of(file: &str, prefix: &str) -> Option<(PathBuf, String)> {
    let prefix = Path::new(prefix);
    let (dir, name) = match file {
        f if f.starts_with("meshsim") && f.ends_with(".1") => ("share/man/man1", f),
        "meshsim.bash" => ("share/bash-completion/completions", "meshsim"),
        // Debian's zsh reads packages' completions from vendor-completions, and local ones
        // from site-functions.
        "_meshsim" if prefix == Path::new("/usr") => ("share/zsh/vendor-completions", file),
        "_meshsim" => ("share/zsh/site-functions", file),
        "meshsim.fish" => ("share/fish/vendor_completions.d", file),
        _ => return None,
    };
    Some((prefix.join(dir), name.to_owned()))
}

/// The installed copy of generated file `file`, under the first prefix that has it.
pub fn installed(file: &str) -> Option<PathBuf> {
    PREFIXES.iter().find_map(|prefix| {
        let (dir, name) = place_of(file, prefix)?;
        // A package compresses its man pages.
        [name.clone(), format!("{name}.gz")]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
    })
}

/// Where the example topologies are installed.
pub fn examples() -> Option<PathBuf> {
    PREFIXES
        .iter()
        .map(|prefix| Path::new(prefix).join("share/doc/meshsim/examples"))
        .find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_file_goes_where_the_system_looks() {
        let dir = std::env::temp_dir().join(format!("meshsim-files-{}", std::process::id()));
        let command = clap::Command::new("meshsim")
            .subcommand(clap::Command::new("up"))
            .subcommand(clap::Command::new("down"));
        generate(command, &dir, "/usr/local").unwrap();
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path.strip_prefix(&dir).unwrap().display().to_string());
                }
            }
        }
        files.sort();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            files,
            [
                "share/bash-completion/completions/meshsim",
                "share/fish/vendor_completions.d/meshsim.fish",
                "share/man/man1/meshsim-down.1",
                "share/man/man1/meshsim-up.1",
                "share/man/man1/meshsim.1",
                "share/zsh/site-functions/_meshsim",
            ]
        );
        assert_eq!(
            place_of("_meshsim", "/usr"),
            Some((
                PathBuf::from("/usr/share/zsh/vendor-completions"),
                "_meshsim".to_owned()
            ))
        );
        assert_eq!(place_of("README", "/usr"), None);
    }
}

//! `cargo xtask images`: the docker backend's node images, built without any registry.
//!
//! 1. `meshsim/debian:bookworm`: `debootstrap --variant=minbase bookworm` from the Debian
//!    mirror apt uses on this machine, imported as an image (the Engine API's
//!    `/images/create?fromSrc=-`, the same as `docker import`).
//! 2. `meshsim/base` (images/base) and 3. `meshsim/synapse` (images/synapse), built from
//!    their Dockerfiles with the classic builder.
//!
//! An image that exists is kept, so a second run costs a few API calls; delete one
//! (`docker rmi meshsim/synapse`) to build it again. Everything goes through bollard with a
//! negotiated API version, like meshsim itself: Debian's daemon is older than a current
//! docker CLI.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use bollard::{
    Docker,
    query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder},
};
use futures_util::StreamExt as _;

/// The locally made root of every image.
const DEBIAN: (&str, &str) = ("meshsim/debian", "bookworm");
/// Synapse's release: the one the netns backend installs (meshsim/src/workload/synapse/config.rs).
const SYNAPSE_VERSION: &str = "1.163.2";
/// Its Postgres driver (meshsim/src/workload/synapse/config.rs).
const PSYCOPG2_VERSION: &str = "2.9.13";
/// The label of meshsim/synapse that says which versions it holds.
const CONTENTS_LABEL: &str = "org.meshsim.contents";
/// The host's trusted certificates, copied into the base image's build context (see
/// images/base/Dockerfile).
const HOST_CA: &str = "/etc/ssl/certs/ca-certificates.crt";
const HOST_CA_IN_CONTEXT: &str = "host-ca-certificates.crt";
/// Where the debootstrapped tree is made (and removed after the import).
const ROOTFS: &str = "/var/tmp/meshsim-debian-rootfs";
/// Used when apt's sources name no Debian mirror.
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

pub fn run() -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting an async runtime")?
        .block_on(build_all())
}

async fn build_all() -> Result<()> {
    let docker = Docker::connect_with_unix_defaults()
        .context("connecting to Docker")?
        .negotiate_version()
        .await
        .context(
            "Docker is not reachable: start the daemon (`systemctl start docker`, or run \
             `sudo ./x test`, which starts one of its own)",
        )?;
    let images = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace of xtask")?
        .join("images");
    let debian = format!("{}:{}", DEBIAN.0, DEBIAN.1);
    if exists(&docker, &debian).await? {
        println!("images: {debian} exists");
    } else {
        make_debian(&docker).await?;
    }
    if exists(&docker, "meshsim/base").await? {
        println!("images: meshsim/base exists");
    } else {
        let context = images.join("base");
        std::fs::copy(HOST_CA, context.join(HOST_CA_IN_CONTEXT))
            .with_context(|| format!("copying {HOST_CA} into {}", context.display()))?;
        let built = build(&docker, &context, "meshsim/base", &HashMap::new()).await;
        let _ = std::fs::remove_file(context.join(HOST_CA_IN_CONTEXT));
        built?;
    }
    // The label says what the image holds: one made for other versions is made again.
    let contents =
        format!("synapse[redis] {SYNAPSE_VERSION}, psycopg2 {PSYCOPG2_VERSION}, redis, nginx");
    if label(&docker, "meshsim/synapse", CONTENTS_LABEL)
        .await?
        .as_deref()
        == Some(&contents)
    {
        println!("images: meshsim/synapse exists ({contents})");
    } else {
        let args = HashMap::from([
            ("SYNAPSE_VERSION", SYNAPSE_VERSION),
            ("PSYCOPG2_VERSION", PSYCOPG2_VERSION),
        ]);
        build(&docker, &images.join("synapse"), "meshsim/synapse", &args).await?;
    }
    Ok(())
}

/// The value of `key` among the image's labels; `None` when it has no such label or there
/// is no such image.
async fn label(docker: &Docker, image: &str, key: &str) -> Result<Option<String>> {
    match docker.inspect_image(image).await {
        Ok(inspect) => Ok(inspect
            .config
            .and_then(|c| c.labels)
            .and_then(|mut labels| labels.remove(key))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up the image {image}")),
    }
}

async fn exists(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("looking up the image {image}")),
    }
}

/// The first Debian mirror apt uses here (deb822 `URIs:` or a one-line `deb` entry), so
/// the build fetches from where this machine is allowed to.
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri
                && !uri.contains("security")
            {
                return uri.trim_end_matches('/').to_owned();
            }
        }
    }
    FALLBACK_MIRROR.to_owned()
}

async fn make_debian(docker: &Docker) -> Result<()> {
    let mirror = debian_mirror();
    let started = Instant::now();
    println!("images: debootstrap --variant=minbase bookworm from {mirror} (about 30 s)");
    let _ = std::fs::remove_dir_all(ROOTFS);
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm", ROOTFS, &mirror])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running debootstrap (Debian: apt-get install debootstrap)")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(ROOTFS);
        bail!("debootstrap failed ({status}): see {ROOTFS}/debootstrap/debootstrap.log");
    }
    let tar = Command::new("tar")
        .args(["-C", ROOTFS, "--numeric-owner", "-c", "."])
        .output()
        .context("packing the root file system with tar")?;
    let _ = std::fs::remove_dir_all(ROOTFS);
    if !tar.status.success() {
        bail!(
            "tar failed: {}",
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    println!(
        "images: importing {} MiB as {}:{}",
        tar.stdout.len() / (1024 * 1024),
        DEBIAN.0,
        DEBIAN.1
    );
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(DEBIAN.0)
        .tag(DEBIAN.1)
        .build();
    let mut stream = docker.create_image(
        Some(options),
        Some(bollard::body_full(tar.stdout.into())),
        None,
    );
    while let Some(info) = stream.next().await {
        let info = info.context("importing the root file system")?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            bail!("importing the root file system: {error}");
        }
    }
    println!(
        "images: {}:{} made in {:.0} s",
        DEBIAN.0,
        DEBIAN.1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds `context`'s Dockerfile as `tag`, printing the builder's output as it comes.
async fn build(
    docker: &Docker,
    context: &Path,
    tag: &str,
    args: &HashMap<&str, &str>,
) -> Result<()> {
    let started = Instant::now();
    println!("images: building {tag} from {}", context.display());
    let tar = Command::new("tar")
        .arg("-C")
        .arg(context)
        .args(["-c", "."])
        .output()
        .with_context(|| format!("packing {} with tar", context.display()))?;
    if !tar.status.success() {
        bail!(
            "tar failed: {}",
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        // The host's network: the build needs no NAT, so the daemon may run without
        // managing iptables (see ./x, setup_docker).
        .networkmode("host")
        .buildargs(args)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.stdout.into())));
    while let Some(info) = stream.next().await {
        let info = info.with_context(|| format!("building {tag}"))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            bail!("building {tag}: {error}");
        }
        if let Some(text) = info.stream {
            // Steps and pip's lines; apt's are many and say little.
            for line in text.lines().filter(|l| {
                l.starts_with("Step ") || l.starts_with("Successfully") || l.contains("Collecting")
            }) {
                println!("  {line}");
            }
        }
    }
    println!(
        "images: {tag} built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

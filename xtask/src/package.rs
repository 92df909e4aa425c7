//! `cargo xtask package`: Debian packages of the two services, built with
//! `dpkg-deb` from a staged tree (no packaging tool beyond Debian's own), into
//! `target/package/`:
//!
//! - `flowlens-daemon`: `/usr/bin/flowlens-daemon`, the XDP object in
//!   `/usr/lib/flowlens/`, `/etc/flowlens/flowlens.yaml` (the generated example: every
//!   key at its default), `/etc/default/flowlens` (secrets), the systemd units of the
//!   daemon and its roles;
//! - `flowlens-api`: `/usr/bin/flowlens-api`, `/usr/bin/flowlens` (the command line, with
//!   its bash, zsh and fish completions), `/etc/flowlens/api.yaml`, its unit.
//!
//! Both create the `flowlens` system user and `/var/lib/flowlens` (postinst) and keep
//! their configuration files as conffiles, so an upgrade never overwrites an edit.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip building the XDP object (the daemon package then has none: sockets only).
    #[arg(long)]
    no_ebpf: bool,
}

struct File {
    from: PathBuf,
    to: String,
    mode: u32,
}

pub(crate) fn run(opts: &Options, ws: &Path) -> Result<()> {
    crate::stack::build_release(ws, true)?;
    let object = if opts.no_ebpf {
        None
    } else {
        Some(crate::stack::build_object().context("building the XDP object")?)
    };
    let version = env!("CARGO_PKG_VERSION");
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .context("running dpkg")?
            .stdout,
    )?
    .trim()
    .to_owned();
    let out = ws.join("target/package");
    std::fs::create_dir_all(&out)?;
    let release = ws.join("target/release");
    let deploy = ws.join("deploy");

    let mut daemon = vec![
        File {
            from: release.join("flowlens-daemon"),
            to: "usr/bin/flowlens-daemon".into(),
            mode: 0o755,
        },
        File {
            from: deploy.join("flowlens-daemon.example.yaml"),
            to: "etc/flowlens/flowlens.yaml".into(),
            mode: 0o640,
        },
        File {
            from: deploy.join("debian/default"),
            to: "etc/default/flowlens".into(),
            mode: 0o640,
        },
        File {
            from: deploy.join("systemd/flowlens-daemon.service"),
            to: "lib/systemd/system/flowlens-daemon.service".into(),
            mode: 0o644,
        },
        File {
            from: deploy.join("systemd/flowlens-daemon@.service"),
            to: "lib/systemd/system/flowlens-daemon@.service".into(),
            mode: 0o644,
        },
        File {
            from: ws.join("README.md"),
            to: "usr/share/doc/flowlens-daemon/README.md".into(),
            mode: 0o644,
        },
        File {
            from: deploy.join("grafana/flowlens.json"),
            to: "usr/share/doc/flowlens-daemon/grafana-flowlens.json".into(),
            mode: 0o644,
        },
    ];
    // The README links into docs/: ship them beside it, so the installed copy's links
    // (the units' Documentation=) resolve.
    let docs = |package: &str| -> Result<Vec<File>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(ws.join("docs"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "md")
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                files.push(File {
                    to: format!("usr/share/doc/{package}/docs/{name}"),
                    from: path,
                    mode: 0o644,
                });
            }
        }
        Ok(files)
    };
    daemon.extend(docs("flowlens-daemon")?);
    if let Some(o) = object {
        daemon.push(File {
            from: o,
            to: "usr/lib/flowlens/flowlens-ebpf".into(),
            mode: 0o644,
        });
    }
    let api = vec![
        File {
            from: release.join("flowlens-api"),
            to: "usr/bin/flowlens-api".into(),
            mode: 0o755,
        },
        File {
            from: deploy.join("flowlens-api.example.yaml"),
            to: "etc/flowlens/api.yaml".into(),
            mode: 0o640,
        },
        File {
            from: deploy.join("systemd/flowlens-api.service"),
            to: "lib/systemd/system/flowlens-api.service".into(),
            mode: 0o644,
        },
        File {
            from: ws.join("README.md"),
            to: "usr/share/doc/flowlens-api/README.md".into(),
            mode: 0o644,
        },
    ];
    let mut api = api;
    api.push(File {
        from: release.join("flowlens"),
        to: "usr/bin/flowlens".into(),
        mode: 0o755,
    });
    // The command line's completions, from the binary itself.
    for (shell, to) in [
        ("bash", "usr/share/bash-completion/completions/flowlens"),
        ("zsh", "usr/share/zsh/vendor-completions/_flowlens"),
        ("fish", "usr/share/fish/vendor_completions.d/flowlens.fish"),
    ] {
        let script = Command::new(release.join("flowlens"))
            .args(["completions", shell])
            .output()
            .context("running flowlens completions")?;
        if !script.status.success() {
            bail!("flowlens completions {shell} failed");
        }
        let generated = out.join(format!("completions-{shell}"));
        std::fs::write(&generated, &script.stdout)?;
        api.push(File {
            from: generated,
            to: to.into(),
            mode: 0o644,
        });
    }
    api.extend(docs("flowlens-api")?);
    for (name, files, conffiles, description) in [
        (
            "flowlens-daemon",
            daemon,
            &["/etc/flowlens/flowlens.yaml", "/etc/default/flowlens"][..],
            "FlowLens flow collector and dependency mapper\n NetFlow v5/v9, IPFIX and sFlow v5 \
             through an XDP fast path or UDP sockets, decoded,\n enriched and aggregated into \
             an application-dependency graph in PostgreSQL.",
        ),
        (
            "flowlens-api",
            api,
            &["/etc/flowlens/api.yaml"][..],
            "FlowLens API\n REST and WebSocket service over the FlowLens dependency graph \
             (assets,\n dependencies, topology, impact and path analyses, changes, alerts),\n \
             and `flowlens`, its command line.",
        ),
    ] {
        let deb = build(
            &out,
            name,
            version,
            &arch,
            &files,
            conffiles,
            description,
            &deploy,
        )?;
        writeln!(std::io::stdout().lock(), "{}", deb.display())?;
    }
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one package's whole description")]
fn build(
    out: &Path,
    name: &str,
    version: &str,
    arch: &str,
    files: &[File],
    conffiles: &[&str],
    description: &str,
    deploy: &Path,
) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let root = out.join(format!("{name}_{version}_{arch}"));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let mut size = 0;
    for f in files {
        let to = root.join(&f.to);
        std::fs::create_dir_all(to.parent().context("a file in a directory")?)?;
        std::fs::copy(&f.from, &to).with_context(|| format!("copying {}", f.from.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(f.mode))?;
        size += std::fs::metadata(&to)?.len();
    }
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: FlowLens maintainers <maintainers@flowlens.invalid>\n\
             Installed-Size: {}\nDepends: adduser, libc6 (>= 2.36)\nSection: net\n\
             Priority: optional\nDescription: {description}\n",
            size.div_ceil(1024)
        ),
    )?;
    std::fs::write(debian.join("conffiles"), conffiles.join("\n") + "\n")?;
    for script in ["postinst", "postrm"] {
        let to = debian.join(script);
        std::fs::copy(deploy.join("debian").join(script), &to)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    }
    let deb = out.join(format!("{name}_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&deb)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb failed for {name}");
    }
    Ok(deb)
}

//! The .deb (issue 18): cargo-deb packages this build's binary with the Cargo.toml metadata and
//! packaging/, and the package is checked as Debian tools see it — lintian finds no error or
//! warning; the config is a conffile, 0640; the binary 0755; the units are systemd/'s own files;
//! the template config waits (fails check-config until `version: 1` is uncommented, and passes
//! then); the maintainer scripts, run against stub commands that record what they are asked to
//! do, make the user, the config's group and the secrets directory on configure, keep
//! everything on remove and delete the state and the user on purge.
//!
//! Needs cargo-deb 3.x and lintian (scripts/test.sh installs both). The binary packaged is the
//! test build of this tree (amd64 here); packaging/build-deb.sh makes the real dist builds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("unable to run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The .deb, built once for all tests of this file.
fn deb() -> &'static Path {
    static DEB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DEB.get_or_init(|| {
        let deb_version = Command::new("cargo").args(["deb", "--version"]).output();
        match deb_version {
            Ok(o) if String::from_utf8_lossy(&o.stdout).starts_with("cargo-deb 3.") => {}
            _ => panic!(
                "cargo-deb 3.x is needed: run scripts/test.sh (it installs it) or \
                 `cargo install cargo-deb --locked --version ^3`"
            ),
        }
        // cargo-deb takes the binary from <target dir>/release/ with --no-build: a target
        // directory of our own holding this test build, so nothing is compiled here.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("release")).unwrap();
        std::fs::copy(BIN, dir.path().join("release/gatehouse")).unwrap();
        run(Command::new("cargo")
            .args(["deb", "--no-build", "--strip", "--fast", "--manifest-path"])
            .arg(Path::new(ROOT).join("Cargo.toml"))
            .arg("-o")
            .arg(dir.path())
            .env("CARGO_TARGET_DIR", dir.path()));
        let deb = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("cargo deb wrote no .deb");
        (dir, deb)
    })
    .1
}

/// One file of the package's data, as dpkg would unpack it.
fn file_in_deb(path: &str) -> String {
    let tar = run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.tar"), &tar.stdout).unwrap();
    text(&run(Command::new("tar")
        .arg("-xOf")
        .arg(dir.path().join("data.tar"))
        .arg(format!("./{path}"))))
}

/// `dpkg-deb --contents`: (mode string, owner, path) per entry.
fn contents() -> Vec<(String, String, String)> {
    text(&run(Command::new("dpkg-deb").arg("--contents").arg(deb())))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[5].trim_start_matches('.').to_string(),
            )
        })
        .collect()
}

#[test]
fn lintian_finds_no_error_or_warning() {
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(deb())
        .output()
        .expect("lintian (apt install lintian; scripts/test.sh installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && !report
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn files_modes_and_conffiles() {
    let files = contents();
    let entry = |p: &str| {
        files
            .iter()
            .find(|(_, _, path)| path == p)
            .unwrap_or_else(|| panic!("{p} is not in the package: {files:#?}"))
    };
    assert_eq!(entry("/usr/bin/gatehouse").0, "-rwxr-xr-x");
    // Not world-readable: the group (gatehouse, by dpkg-statoverride in postinst) reads it.
    assert_eq!(entry("/etc/gatehouse/config.yaml").0, "-rw-r-----");
    for (_, owner, path) in &files {
        // cargo-deb writes numeric ids only.
        assert!(
            owner == "0/0" || owner == "root/root",
            "{path}: owned by {owner}, not root"
        );
    }
    entry("/usr/share/doc/gatehouse/config.example.yaml");
    entry("/usr/share/man/man1/gatehouse.1.gz");
    let conffiles = text(&run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb())
        .arg("conffiles")));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/gatehouse/config.yaml"],
        "an upgrade keeps the user's config"
    );
    let control = text(&run(Command::new("dpkg-deb").arg("--field").arg(deb())));
    assert!(control.contains("Package: gatehouse"), "{control}");
    assert!(
        control
            .lines()
            .any(|l| l.starts_with("Depends:") && l.contains("adduser") && l.contains("libc6")),
        "postinst needs adduser; the binary glibc: {control}"
    );
}

/// The package's units are systemd/'s files byte for byte: one unit for the package and for
/// hand installs.
#[test]
fn the_units_are_the_repositorys() {
    for unit in ["gatehouse.service", "gatehouse.path"] {
        let ours = std::fs::read_to_string(Path::new(ROOT).join("systemd").join(unit)).unwrap();
        assert_eq!(
            file_in_deb(&format!("usr/lib/systemd/system/{unit}")),
            ours,
            "{unit}"
        );
    }
    let service = file_in_deb("usr/lib/systemd/system/gatehouse.service");
    assert!(
        service.contains("ExecStart=/usr/bin/gatehouse "),
        "{service}"
    );
}

/// A fresh install must not start a half-configured daemon: the shipped config fails
/// check-config (so ExecCondition= keeps the service waiting), and is otherwise a valid file
/// for the packaged layout once `version: 1` is uncommented.
#[test]
fn the_template_config_waits_until_it_is_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("config.yaml");
    let template = file_in_deb("etc/gatehouse/config.yaml");
    std::fs::write(&f, &template).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    // 1..254 is "condition failed" for ExecCondition=: inactive, not failed, not restarted.
    assert_eq!(out.status.code(), Some(1), "the template must not pass");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version"), "the error names the fix: {err}");
    assert!(
        template.contains("\n#version: 1\n"),
        "the step the template asks for"
    );
    std::fs::write(&f, template.replace("\n#version: 1\n", "\nversion: 1\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the template with version: 1 uncommented: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = gatehouse::config::load_file(&f).unwrap();
    assert_eq!(
        cfg.storage.path,
        Path::new("/var/lib/gatehouse/gatehouse.db"),
        "the database goes to the service's StateDirectory"
    );
}

/// Runs one maintainer script of the package with every command it calls replaced by a stub
/// that records its arguments (nothing on this machine changes). `installed`: the user and the
/// config's stat override exist already (an upgrade, a purge), as getent and
/// `dpkg-statoverride --list` then answer.
fn run_script(name: &str, args: &[&str], installed: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let ctrl = run(Command::new("dpkg-deb").arg("--ctrl-tarfile").arg(deb()));
    std::fs::write(dir.path().join("control.tar"), &ctrl.stdout).unwrap();
    let script = text(&run(Command::new("tar")
        .arg("-xOf")
        .arg(dir.path().join("control.tar"))
        .arg(format!("./{name}"))));
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("log");
    let stub = format!(
        "#!/bin/sh\necho \"${{0##*/}} $*\" >> '{}'\ncase \"${{0##*/}} $1\" in\n  \
         'getent '*) exit {} ;;\n  'dpkg-statoverride --list') exit {} ;;\nesac\nexit 0\n",
        log.display(),
        if installed { 0 } else { 2 },
        if installed { 0 } else { 1 }
    );
    for cmd in [
        "adduser",
        "deluser",
        "delgroup",
        "getent",
        "dpkg-statoverride",
        "install",
        "rm",
        "rmdir",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "systemctl",
    ] {
        let p = bin.join(cmd);
        std::fs::write(&p, &stub).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = dir.path().join(name);
    std::fs::write(&path, &script).unwrap();
    run(Command::new("/bin/sh")
        .arg("-e")
        .arg(&path)
        .args(args)
        .env("PATH", &bin));
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn postinst_makes_the_user_the_group_override_and_enables_both_units() {
    let calls = run_script("postinst", &["configure"], false);
    let has = |want: &str| calls.iter().any(|c| c.starts_with(want));
    assert!(
        has("adduser --system --group --quiet --home /var/lib/gatehouse --no-create-home"),
        "{calls:#?}"
    );
    assert!(
        has("dpkg-statoverride --update --add root gatehouse 0640 /etc/gatehouse/config.yaml"),
        "{calls:#?}"
    );
    for unit in ["gatehouse.service", "gatehouse.path"] {
        assert!(
            has(&format!("deb-systemd-helper enable {unit}")),
            "{unit} enabled: {calls:#?}"
        );
    }
    // An upgrade (configure with the old version): the user exists, nothing is re-made.
    let calls = run_script("postinst", &["configure", "0.0.9-1"], true);
    assert!(
        !calls.iter().any(|c| c.starts_with("adduser")),
        "{calls:#?}"
    );
}

#[test]
fn remove_keeps_the_state_and_purge_deletes_it_and_the_user() {
    let calls = run_script("postrm", &["remove"], true);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("rm ") || c.starts_with("deluser")),
        "remove keeps the database, the secrets and the user: {calls:#?}"
    );
    let calls = run_script("postrm", &["purge"], true);
    let has = |want: &str| calls.iter().any(|c| c == want);
    assert!(has("rm -rf /var/lib/gatehouse"), "{calls:#?}");
    assert!(has("rm -rf /etc/gatehouse/secrets"), "{calls:#?}");
    assert!(
        has("dpkg-statoverride --remove /etc/gatehouse/config.yaml"),
        "{calls:#?}"
    );
    assert!(has("deluser --system --quiet gatehouse"), "{calls:#?}");
    // The units' enablement state goes too (cargo-deb's part of the script).
    let script = {
        let ctrl = run(Command::new("dpkg-deb").arg("--ctrl-tarfile").arg(deb()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.tar"), &ctrl.stdout).unwrap();
        text(&run(Command::new("tar")
            .arg("-xOf")
            .arg(dir.path().join("c.tar"))
            .arg("./postrm")))
    };
    assert!(
        script.contains("deb-systemd-helper purge gatehouse.path gatehouse.service"),
        "{script}"
    );
}

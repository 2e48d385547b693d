//! Builds the guest components the host embeds: the Dropbox connector and the hostile test
//! guest, with a nested `cargo build --target wasm32-wasip2`.
//!
//! Why a nested build with its own target dir: sharing the outer target dir deadlocks on
//! cargo's build lock, and flags meant for the host (RUSTFLAGS, wrappers, linker args) break the
//! wasm link, so they are cleared. `DROPBOX_CONNECTOR_WASM` / `HOSTILE_GUEST_WASM` point at
//! prebuilt components instead (then nothing is built here).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "wasm-release";

struct Guest {
    package: &'static str,
    artifact: &'static str,
    env_override: &'static str,
    env_out: &'static str,
}

const GUESTS: &[Guest] = &[
    Guest {
        package: "dropbox-connector",
        artifact: "dropbox_connector.wasm",
        env_override: "DROPBOX_CONNECTOR_WASM",
        env_out: "DROPBOX_CONNECTOR_WASM_PATH",
    },
    Guest {
        package: "notes-connector",
        artifact: "notes_connector.wasm",
        env_override: "NOTES_CONNECTOR_WASM",
        env_out: "NOTES_CONNECTOR_WASM_PATH",
    },
    Guest {
        package: "hostile-guest",
        artifact: "hostile_guest.wasm",
        env_override: "HOSTILE_GUEST_WASM",
        env_out: "HOSTILE_GUEST_WASM_PATH",
    },
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host-test lives inside the workspace")
        .to_path_buf();
    for path in [
        "src",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
        "tests/guests/hostile/src",
        "tests/guests/hostile/Cargo.toml",
        "tests/connectors/notes/src",
        "tests/connectors/notes/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    for guest in GUESTS {
        println!("cargo:rerun-if-env-changed={}", guest.env_override);
    }

    let prebuilt: Vec<Option<PathBuf>> = GUESTS
        .iter()
        .map(|g| env::var_os(g.env_override).map(PathBuf::from))
        .collect();
    let to_build: Vec<&Guest> = GUESTS
        .iter()
        .zip(&prebuilt)
        .filter(|(_, p)| p.is_none())
        .map(|(g, _)| g)
        .collect();

    // A fixed folder beside the outer target dir: survives `cargo clean -p host-test`, shared by
    // debug and release host builds, so the guest is built once.
    let target_dir = guest_target_dir(&root);
    if !to_build.is_empty() {
        ensure_wasm_target();
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args([
                "build",
                "--locked",
                "--profile",
                PROFILE,
                "--target",
                TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        for guest in &to_build {
            cmd.args(["-p", guest.package]);
        }
        for var in [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "CARGO_MAKEFLAGS",
            "MAKEFLAGS",
            "CARGO_PROFILE_RELEASE_LTO",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd
            .status()
            .expect("could not run cargo for the nested wasm32-wasip2 build");
        if !status.success() {
            panic!("the nested build of the guest components failed (see the output above)");
        }
    }

    for (guest, prebuilt) in GUESTS.iter().zip(prebuilt) {
        let path =
            prebuilt.unwrap_or_else(|| target_dir.join(TARGET).join(PROFILE).join(guest.artifact));
        if !path.exists() {
            panic!(
                "guest component {} not found at {}",
                guest.package,
                path.display()
            );
        }
        println!("cargo:rustc-env={}={}", guest.env_out, path.display());
    }
}

fn guest_target_dir(root: &Path) -> PathBuf {
    // OUT_DIR is <target>/<profile>/build/host-test-<hash>/out: walk up to <target>.
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    out_dir
        .ancestors()
        .nth(4)
        .map(|target| target.join("guest-wasm"))
        .unwrap_or_else(|| root.join("target").join("guest-wasm"))
}

/// Add the wasm32-wasip2 target through rustup when it is missing, or stop with a message
/// that says exactly what to run.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    let installed = sysroot
        .as_ref()
        .map(|s| s.join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if installed {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added {
        panic!(
            "the Rust target {TARGET} is not installed and `rustup target add {TARGET}` failed; \
             run `rustup target add {TARGET}` (or set DROPBOX_CONNECTOR_WASM and HOSTILE_GUEST_WASM \
             to prebuilt components)"
        );
    }
}

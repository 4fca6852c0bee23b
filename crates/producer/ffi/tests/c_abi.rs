//! Builds tests/abi_test.c against include/ttmem.h with `-Wall -Wextra -Werror`, links it to the
//! static library (with ASan and UBSan) and to the shared library, and runs both; and checks
//! the header declares exactly the functions the library exports.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .canonicalize()
        .unwrap()
}

/// The directory with libttmem.{a,so} (target/<profile>/), built fresh once per test run:
/// `cargo test` builds only the rlib, so the C libraries are built here with the same profile.
fn lib_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let target = dir.parent().unwrap();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "-p", "ttmem-ffi", "--lib"])
                .env("CARGO_TARGET_DIR", target);
            if dir.file_name().unwrap() == "release" {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "building libttmem failed");
            dir
        })
        .clone()
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn build(out: &Path, extra: &[&str]) {
    let status = Command::new(cc())
        .args(["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/abi_test.c"))
        .arg("-I")
        .arg(root().join("include"))
        .args(extra)
        .status()
        .expect("a C compiler (cc) must be installed; scripts/setup.sh installs one");
    assert!(status.success(), "compiling the C test failed");
}

fn run(exe: &Path, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(exe)
        .args(args)
        .env("TTMEM_DIR", dir)
        .env("LD_LIBRARY_PATH", lib_dir())
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "C test failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn check_run(exe: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let printed = run(exe, dir.path(), &[], &[]);
    let region = PathBuf::from(printed.trim());
    assert!(region.starts_with(dir.path()), "{region:?}");
    assert!(!region.exists(), "a clean exit removes the region");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no region left behind by parent or child"
    );
    let off = tempfile::tempdir().unwrap();
    assert_eq!(
        run(exe, off.path(), &[("TTMEM_DISABLE", "1")], &["disabled"]).trim(),
        "disabled ok"
    );
    assert_eq!(
        std::fs::read_dir(off.path()).unwrap().count(),
        0,
        "TTMEM_DISABLE creates nothing"
    );
}

#[test]
fn c_program_with_static_library() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("abi_static");
    let lib = lib_dir().join("libttmem.a");
    assert!(lib.exists(), "{lib:?} missing");
    build(
        &exe,
        &[
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            lib.to_str().unwrap(),
            "-lpthread",
            "-ldl",
            "-lm",
        ],
    );
    check_run(&exe);
}

#[test]
fn c_program_with_shared_library() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("abi_shared");
    assert!(lib_dir().join("libttmem.so").exists());
    build(&exe, &["-L", lib_dir().to_str().unwrap(), "-lttmem"]);
    check_run(&exe);
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let header = std::fs::read_to_string(root().join("include/ttmem.h")).unwrap();
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with(['*', '/', '#']) && l.contains('(') && l.trim_end().ends_with(");"))
        .filter_map(|l| {
            l.split('(')
                .next()?
                .split_whitespace()
                .last()
                .map(|n| n.trim_start_matches('*').to_string())
        })
        .collect();
    let mut exported: Vec<String> = source
        .lines()
        .filter(|l| l.contains("extern \"C\" fn ttmem_"))
        .filter_map(|l| l.split("fn ").nth(1)?.split('(').next().map(str::to_string))
        .collect();
    declared.sort();
    exported.sort();
    assert_eq!(declared, exported, "include/ttmem.h and src/lib.rs disagree");
    // Struct field counts must match too.
    for (c_name, fields) in [("ttmem_counters", 7), ("ttmem_category", 6), ("ttmem_device_desc", 8)] {
        let body = header
            .split(&format!("typedef struct {c_name} {{"))
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        let decls = body
            .lines()
            .map(|l| l.split("/*").next().unwrap())
            .filter(|l| l.contains(';'))
            .count();
        assert_eq!(decls, fields, "{c_name}");
    }
    assert_eq!(std::mem::size_of::<ttmem::ttmem_counters>(), 56);
    assert_eq!(std::mem::size_of::<ttmem::ttmem_category>(), 40);
    assert_eq!(std::mem::size_of::<ttmem::ttmem_device_desc>(), 56);
}

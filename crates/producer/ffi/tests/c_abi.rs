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
        .args(["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg(format!("-DTTMEM_EXPECTED_VERSION=\"{}\"", env!("CARGO_PKG_VERSION")))
        .arg("-o")
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
    // A region directory that cannot be created: TTMEM_IO_ERROR naming it, counting goes on.
    let blocked = tempfile::tempdir().unwrap();
    std::fs::write(blocked.path().join("file"), b"").unwrap();
    let unusable = blocked.path().join("file/regions");
    let printed = run(
        exe,
        blocked.path(),
        &[("TTMEM_DIR", unusable.to_str().unwrap())],
        &["io-error"],
    );
    assert!(
        printed.starts_with("io-error ok: cannot use region directory"),
        "{printed}"
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
}

/// Compiles `_Static_assert`s generated from the Rust definitions against the header: every
/// struct's size and field offsets, every constant, every result code. A header that drifts
/// from the library fails to compile, with the field or constant named.
#[test]
fn header_layout_and_constants_match_the_library_in_c() {
    use std::fmt::Write as _;
    use std::mem::{offset_of, size_of};
    use ttmem::{ttmem_category, ttmem_counters, ttmem_device_desc, ttmem_result};
    use ttmem_client::{DeviceKind, tt};
    let mut c = String::from("#include <stddef.h>\n#include \"ttmem.h\"\n");
    let mut check = |expr: String, value: usize| {
        writeln!(c, "_Static_assert(({expr}) == {value}, \"{expr} must be {value}\");").unwrap();
    };
    macro_rules! layout {
        ($t:ident, $($f:ident),+) => {
            check(format!("sizeof({})", stringify!($t)), size_of::<$t>());
            $(check(format!("offsetof({}, {})", stringify!($t), stringify!($f)), offset_of!($t, $f));)+
        };
    }
    layout!(ttmem_category, name, capacity, addr_base, addr_end, banks, alignment);
    layout!(
        ttmem_device_desc,
        kind,
        hw_id,
        logical_id,
        remote,
        arch,
        name,
        categories,
        num_categories
    );
    layout!(
        ttmem_counters,
        live_bytes,
        live_count,
        allocs,
        frees,
        alloc_bytes,
        free_bytes,
        peak_bytes
    );
    check("sizeof(ttmem_result)".into(), size_of::<ttmem_result>());
    let mut constants: Vec<(&str, usize)> = vec![
        ("TTMEM_KIND_TENSTORRENT", DeviceKind::Tenstorrent.code() as usize),
        (
            "TTMEM_KIND_SIMULATED_TENSTORRENT",
            DeviceKind::SimulatedTenstorrent.code() as usize,
        ),
        ("TTMEM_KIND_CUDA", DeviceKind::Cuda.code() as usize),
        ("TTMEM_TT_DRAM", tt::DRAM as usize),
        ("TTMEM_TT_L1", tt::L1 as usize),
        ("TTMEM_TT_L1_SMALL", tt::L1_SMALL as usize),
        ("TTMEM_TT_TRACE", tt::TRACE as usize),
        ("TTMEM_TT_CB", tt::CB as usize),
        ("TTMEM_TT_KERNEL", tt::KERNEL as usize),
        ("TTMEM_TT_SYSTEM_MEMORY", tt::SYSTEM_MEMORY as usize),
    ];
    for r in [
        ttmem_result::TTMEM_OK,
        ttmem_result::TTMEM_DISABLED,
        ttmem_result::TTMEM_INVALID_ARGUMENT,
        ttmem_result::TTMEM_TOO_MANY_DEVICES,
        ttmem_result::TTMEM_IO_ERROR,
        ttmem_result::TTMEM_INTERNAL_ERROR,
    ] {
        check(format!("{r:?}"), r as usize);
    }
    for (name, value) in &constants {
        check((*name).into(), *value);
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("layout.c");
    std::fs::write(&src, &c).unwrap();
    let out = Command::new(cc())
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
        .arg(root().join("include"))
        .arg(&src)
        .output()
        .expect("a C compiler (cc) must be installed; scripts/setup.sh installs one");
    assert!(out.status.success(), "{}\n{c}", String::from_utf8_lossy(&out.stderr));
    // Every constant the header defines is one of those checked.
    let header = std::fs::read_to_string(root().join("include/ttmem.h")).unwrap();
    constants.sort();
    for name in header
        .lines()
        .filter_map(|l| l.strip_prefix("#define TTMEM_"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "H")
    {
        let name = format!("TTMEM_{name}");
        assert!(
            constants.iter().any(|(c, _)| *c == name),
            "{name} is not checked against the library"
        );
    }
    // Every environment variable the client reads is listed in the header.
    for var in [
        ttmem_client::config::ENV_DISABLE,
        ttmem_client::config::ENV_DIR,
        ttmem_client::config::ENV_RING_EVENTS,
        ttmem_client::config::ENV_SHARDS,
        ttmem_client::config::ENV_REGION_MODE,
        ttmem_client::config::ENV_PROCESS_NAME,
        ttmem_client::config::ENV_CLOCK,
        ttmem_client::config::ENV_CLOCK_US,
        ttmem_client::config::ENV_KEEP_ON_EXIT,
    ] {
        assert!(
            header.contains(&format!(" *   {var}")),
            "include/ttmem.h does not list {var}"
        );
    }
}

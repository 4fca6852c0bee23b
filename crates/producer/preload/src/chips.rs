//! Which physical chips a TT-Metal buffer lives on.
//!
//! ttnn opens every device as a mesh (a single chip is a 1×1 mesh), and a buffer's device is
//! its `MeshDevice`, which replicates the buffer at the same address on each of its chips. The
//! chips' unique ids are not reachable through exported functions, but TT-Metal names its
//! counter files by them and claims a slot with its pid in each chip's file on its first
//! allocation, which runs inside the tracked call: after the original returns, the files with
//! this process's slot are its chips. A mesh is mapped once, on its first buffer (a cold path:
//! it reads a few files); every later event is a table lookup.
//!
//! With TT-Metal's counters off (`TT_METAL_SHM_TRACKING_DISABLED=1`) the unique ids are unknown:
//! the mesh's chips are registered without hardware ids, counted and shown per process.
//! A process with several meshes cannot tell their chips apart this way; each mesh is then
//! mapped to the chips it adds to this process's files.

use std::collections::HashSet;
use std::ffi::c_void;
use std::path::PathBuf;

use ttmem_client::{CategorySpec, Device, DeviceKind, DeviceSpec, tt};

use crate::symbols::Accessors;

/// The chips of one mesh, registered with the tracker.
pub struct Mesh {
    /// One handle per chip, in chip order.
    pub devices: Vec<Device>,
}

/// This process's chips as TT-Metal's counter files list them: (unique id, logical id,
/// remote), in logical order.
fn my_chips(dir: &std::path::Path) -> Vec<(u64, u32, bool)> {
    let me = std::process::id();
    let Ok(scan) = ttmem_ttmetal::read_dir(dir) else {
        return Vec::new();
    };
    let mut chips: Vec<(u64, u32, bool)> = scan
        .files
        .iter()
        .filter(|r| r.file.slots.iter().any(|s| s.pid == me))
        .map(|r| {
            let f = &r.file;
            let remote = f.chips.iter().any(|c| c.chip_id == f.device_id && c.remote);
            (f.asic_id, f.device_id, remote)
        })
        .collect();
    chips.sort_by_key(|c| (c.1, c.0));
    chips
}

fn arch_name(code: u32) -> &'static str {
    match code & 0xFF {
        1 => "grayskull",
        2 => "wormhole_b0",
        3 => "blackhole",
        4 => "quasar",
        _ => "unknown",
    }
}

/// The categories of a chip of `mesh`, with the address ranges its allocator uses: DRAM
/// interleaved over its channels, L1 over its worker cores. The other categories have no
/// range ttmem can learn from exported functions.
///
/// # Safety
/// `mesh` is a live `MeshDevice`.
unsafe fn categories(a: &Accessors, mesh: *const c_void) -> (&'static str, Vec<CategorySpec>) {
    // SAFETY: exported const member functions of a live MeshDevice, `this` first.
    let (arch, channels, dram, l1, grid) = unsafe {
        (
            (a.arch)(mesh),
            (a.num_dram_channels)(mesh).max(0) as u32,
            (a.dram_size_per_channel)(mesh) as u64,
            (a.l1_size_per_core)(mesh) as u64,
            (a.grid)(mesh),
        )
    };
    let cores = grid.x.saturating_mul(grid.y).min(u32::MAX as u64) as u32;
    let mut cats: Vec<CategorySpec> = tt::NAMES.iter().map(|n| tt::category(n, 1, 0, 0, 0)).collect();
    cats[tt::DRAM as usize] = tt::category("DRAM", channels.max(1), 0, dram, 32);
    cats[tt::L1 as usize] = tt::category("L1", cores.max(1), 0, l1, 16);
    (arch_name(arch), cats)
}

/// Registers the chips of `mesh` with the process's tracker. `taken` holds the chips earlier
/// meshes of this process were mapped to.
///
/// # Safety
/// `mesh` is a live `MeshDevice`.
pub unsafe fn map_mesh(a: &Accessors, mesh: *const c_void, taken: &mut HashSet<u64>) -> Mesh {
    let t = ttmem_client::global();
    // SAFETY: the caller's contract.
    let (arch, cats) = unsafe { categories(a, mesh) };
    // SAFETY: as above.
    let (id, n) = unsafe { ((a.mesh_id)(mesh), (a.mesh_num_devices)(mesh).clamp(1, 64)) };
    let dir = std::env::var_os("TTMEM_TT_METAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ttmem_ttmetal::DEFAULT_DIR));
    let chips: Vec<(u64, u32, bool)> = my_chips(&dir).into_iter().filter(|c| !taken.contains(&c.0)).collect();
    let specs: Vec<DeviceSpec> = if chips.is_empty() {
        // TT-Metal's counters are off: the chips are known by count only.
        (0..n)
            .map(|i| DeviceSpec {
                remote: false,
                ..DeviceSpec::tenstorrent(
                    DeviceKind::Tenstorrent,
                    0,
                    i as i32,
                    arch,
                    &format!("mesh{id}:{i}"),
                    cats.clone(),
                )
            })
            .collect()
    } else {
        chips
            .iter()
            .map(|&(hw, logical, remote)| {
                taken.insert(hw);
                DeviceSpec {
                    remote,
                    ..DeviceSpec::tenstorrent(
                        DeviceKind::Tenstorrent,
                        hw,
                        logical as i32,
                        arch,
                        &format!("tt:{logical}"),
                        cats.clone(),
                    )
                }
            })
            .collect()
    };
    let devices = specs
        .iter()
        .filter_map(|s| match t.register_device(s) {
            Ok(d) => Some(d),
            Err(e) => {
                crate::warn_once(&format!("cannot register a chip: {e}"));
                None
            }
        })
        .collect();
    Mesh { devices }
}

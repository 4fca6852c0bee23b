//! The four struct layouts, byte exact (native little-endian, packed as the C compilers of the
//! clients lay them out). Fields a version lacks read as zero and are not written.

use serde::Serialize;

/// A protocol version, told apart only by the struct size.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Version {
    /// 72 bytes: the first server, the demo client, the first monitor and Python client.
    P1,
    /// 112 bytes: adds device information (the tt-metal client of that era, second monitor).
    P2,
    /// 128 bytes: P2 with CB and kernel totals (described in documents only).
    P3,
    /// 144 bytes: P3 with ring-buffer fields (newest server and client, `tt_smi_umd`).
    P4,
}

impl Version {
    /// Every version, smallest first.
    pub const ALL: [Version; 4] = [Version::P1, Version::P2, Version::P3, Version::P4];

    /// The struct size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Version::P1 => 72,
            Version::P2 => 112,
            Version::P3 => 128,
            Version::P4 => 144,
        }
    }

    /// The version with this struct size.
    pub fn from_size(size: usize) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.size() == size)
    }

    /// The short name (`P1`…`P4`).
    pub const fn name(self) -> &'static str {
        match self {
            Version::P1 => "P1",
            Version::P2 => "P2",
            Version::P3 => "P3",
            Version::P4 => "P4",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "P1" | "1" | "72" => Ok(Version::P1),
            "P2" | "2" | "112" => Ok(Version::P2),
            "P3" | "3" | "128" => Ok(Version::P3),
            "P4" | "4" | "144" => Ok(Version::P4),
            _ => Err(format!(
                "unknown legacy protocol version {s:?} (expected P1, P2, P3 or P4)"
            )),
        }
    }
}

/// The message type byte.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MsgType {
    /// A buffer was allocated.
    Alloc = 1,
    /// A buffer was freed.
    Free = 2,
    /// Asks for one device's totals.
    Query = 3,
    /// The answer to [`MsgType::Query`].
    Response = 4,
    /// Asks the server to log every live buffer.
    DumpRemaining = 5,
    /// Asks for the device count (`device_id` -1) or one device's description.
    DeviceInfoQuery = 6,
    /// The answer to [`MsgType::DeviceInfoQuery`].
    DeviceInfoResponse = 7,
    /// A program's circular buffer was allocated (total size over its cores).
    CbAlloc = 8,
    /// A circular buffer was freed.
    CbFree = 9,
    /// A kernel binary was loaded (`buffer_type` carries its kind).
    KernelLoad = 10,
    /// A kernel binary was unloaded.
    KernelUnload = 11,
    /// Asks the server to log every loaded kernel.
    DumpKernels = 12,
}

impl MsgType {
    /// Every type, by value.
    pub const ALL: [MsgType; 12] = [
        MsgType::Alloc,
        MsgType::Free,
        MsgType::Query,
        MsgType::Response,
        MsgType::DumpRemaining,
        MsgType::DeviceInfoQuery,
        MsgType::DeviceInfoResponse,
        MsgType::CbAlloc,
        MsgType::CbFree,
        MsgType::KernelLoad,
        MsgType::KernelUnload,
        MsgType::DumpKernels,
    ];

    /// The type with this byte.
    pub fn from_u8(b: u8) -> Option<MsgType> {
        MsgType::ALL.get((b as usize).wrapping_sub(1)).copied()
    }

    /// Whether a client sends this type (responses go the other way).
    pub const fn is_request(self) -> bool {
        !matches!(self, MsgType::Response | MsgType::DeviceInfoResponse)
    }

    /// The protocol's name, e.g. `DUMP_REMAINING`.
    pub const fn name(self) -> &'static str {
        match self {
            MsgType::Alloc => "ALLOC",
            MsgType::Free => "FREE",
            MsgType::Query => "QUERY",
            MsgType::Response => "RESPONSE",
            MsgType::DumpRemaining => "DUMP_REMAINING",
            MsgType::DeviceInfoQuery => "DEVICE_INFO_QUERY",
            MsgType::DeviceInfoResponse => "DEVICE_INFO_RESPONSE",
            MsgType::CbAlloc => "CB_ALLOC",
            MsgType::CbFree => "CB_FREE",
            MsgType::KernelLoad => "KERNEL_LOAD",
            MsgType::KernelUnload => "KERNEL_UNLOAD",
            MsgType::DumpKernels => "DUMP_KERNELS",
        }
    }
}

/// One message, with every field of the largest layout (fields a version lacks are zero).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The type byte as sent (see [`MsgType::from_u8`]).
    pub msg_type: u8,
    /// Device; -1 means "all / count" in DEVICE_INFO_QUERY.
    pub device_id: i32,
    /// Bytes.
    pub size: u64,
    /// tt-metal `BufferType` (for KERNEL_LOAD the kernel kind).
    pub buffer_type: u8,
    /// The sender's idea of its pid (0 from some senders; the peer's credentials decide).
    pub process_id: i32,
    /// Device address, CB address or kernel id.
    pub buffer_id: u64,
    /// Sender's wall clock in ns (informational).
    pub timestamp: u64,
    /// Reply: DRAM bytes.
    pub dram_allocated: u64,
    /// Reply: L1 bytes.
    pub l1_allocated: u64,
    /// Reply: L1_SMALL bytes.
    pub l1_small_allocated: u64,
    /// Reply: TRACE bytes.
    pub trace_allocated: u64,
    /// Reply (P3/P4): CB bytes.
    pub cb_allocated: u64,
    /// Reply (P3/P4): kernel bytes.
    pub kernel_allocated: u64,
    /// Device info: total DRAM.
    pub total_dram_size: u64,
    /// Device info: total L1.
    pub total_l1_size: u64,
    /// Device info: 0 invalid, 1 Grayskull, 2 Wormhole_B0, 3 Blackhole, 4 Quasar.
    pub arch_type: u32,
    /// Device info: DRAM channels.
    pub num_dram_channels: u32,
    /// Device info: bytes per DRAM channel.
    pub dram_size_per_channel: u32,
    /// Device info: L1 bytes per core.
    pub l1_size_per_core: u32,
    /// Device info: 1 when the device exists.
    pub is_available: u32,
    /// Device info: devices on the host.
    pub num_devices: u32,
    /// P4: ring-buffer size.
    pub ringbuffer_total_size: u32,
    /// P4: ring-buffer bytes used.
    pub ringbuffer_used_bytes: u32,
    /// P4: programs in the ring buffer.
    pub ringbuffer_num_programs: u32,
}

/// Byte ranges that must be zero in every version (padding).
pub const COMMON_PADDING: [std::ops::Range<usize>; 2] = [1..4, 17..20];
/// The trailing padding of P4.
pub const P4_PADDING: std::ops::Range<usize> = 140..144;
/// The bytes a reader needs to judge whether a message starts somewhere (type, padding, device).
pub const HEAD_BYTES: usize = 24;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Where a version keeps its device-information tail (P2 has no CB/kernel fields before it).
const fn info_base(v: Version) -> usize {
    match v {
        Version::P1 => 0,
        Version::P2 => 72,
        Version::P3 | Version::P4 => 88,
    }
}

impl Message {
    /// The type, if the byte names one.
    pub fn kind(&self) -> Option<MsgType> {
        MsgType::from_u8(self.msg_type)
    }

    /// A request of `kind` for `device_id` with everything else zero.
    pub fn request(kind: MsgType, device_id: i32) -> Message {
        Message {
            msg_type: kind as u8,
            device_id,
            ..Message::default()
        }
    }

    /// Decodes one message of version `v` from exactly `v.size()` bytes (or more: the rest is
    /// ignored). `None` when `bytes` is shorter.
    pub fn decode(bytes: &[u8], v: Version) -> Option<Message> {
        let b = bytes.get(..v.size())?;
        let mut m = Message {
            msg_type: b[0],
            device_id: u32_at(b, 4) as i32,
            size: u64_at(b, 8),
            buffer_type: b[16],
            process_id: u32_at(b, 20) as i32,
            buffer_id: u64_at(b, 24),
            timestamp: u64_at(b, 32),
            dram_allocated: u64_at(b, 40),
            l1_allocated: u64_at(b, 48),
            l1_small_allocated: u64_at(b, 56),
            trace_allocated: u64_at(b, 64),
            ..Message::default()
        };
        if v >= Version::P3 {
            m.cb_allocated = u64_at(b, 72);
            m.kernel_allocated = u64_at(b, 80);
        }
        if v >= Version::P2 {
            let t = info_base(v);
            m.total_dram_size = u64_at(b, t);
            m.total_l1_size = u64_at(b, t + 8);
            m.arch_type = u32_at(b, t + 16);
            m.num_dram_channels = u32_at(b, t + 20);
            m.dram_size_per_channel = u32_at(b, t + 24);
            m.l1_size_per_core = u32_at(b, t + 28);
            m.is_available = u32_at(b, t + 32);
            m.num_devices = u32_at(b, t + 36);
        }
        if v == Version::P4 {
            m.ringbuffer_total_size = u32_at(b, 128);
            m.ringbuffer_used_bytes = u32_at(b, 132);
            m.ringbuffer_num_programs = u32_at(b, 136);
        }
        Some(m)
    }

    /// Appends the `v.size()` bytes of this message in version `v`'s layout (padding zero;
    /// fields the version lacks are dropped).
    pub fn encode_into(&self, v: Version, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + v.size(), 0);
        let b = &mut out[start..];
        let put32 = |b: &mut [u8], at: usize, x: u32| b[at..at + 4].copy_from_slice(&x.to_le_bytes());
        let put64 = |b: &mut [u8], at: usize, x: u64| b[at..at + 8].copy_from_slice(&x.to_le_bytes());
        b[0] = self.msg_type;
        put32(b, 4, self.device_id as u32);
        put64(b, 8, self.size);
        b[16] = self.buffer_type;
        put32(b, 20, self.process_id as u32);
        put64(b, 24, self.buffer_id);
        put64(b, 32, self.timestamp);
        put64(b, 40, self.dram_allocated);
        put64(b, 48, self.l1_allocated);
        put64(b, 56, self.l1_small_allocated);
        put64(b, 64, self.trace_allocated);
        if v >= Version::P3 {
            put64(b, 72, self.cb_allocated);
            put64(b, 80, self.kernel_allocated);
        }
        if v >= Version::P2 {
            let t = info_base(v);
            put64(b, t, self.total_dram_size);
            put64(b, t + 8, self.total_l1_size);
            put32(b, t + 16, self.arch_type);
            put32(b, t + 20, self.num_dram_channels);
            put32(b, t + 24, self.dram_size_per_channel);
            put32(b, t + 28, self.l1_size_per_core);
            put32(b, t + 32, self.is_available);
            put32(b, t + 36, self.num_devices);
        }
        if v == Version::P4 {
            put32(b, 128, self.ringbuffer_total_size);
            put32(b, 132, self.ringbuffer_used_bytes);
            put32(b, 136, self.ringbuffer_num_programs);
        }
    }

    /// The message in version `v`'s layout.
    pub fn encode(&self, v: Version) -> Vec<u8> {
        let mut out = Vec::with_capacity(v.size());
        self.encode_into(v, &mut out);
        out
    }
}

/// Whether a message's padding bytes are all zero (every client zeroes its struct).
pub fn padding_is_zero(bytes: &[u8], v: Version) -> bool {
    let common = COMMON_PADDING
        .iter()
        .all(|r| bytes.get(r.clone()).is_some_and(|p| p.iter().all(|&x| x == 0)));
    common && (v != Version::P4 || bytes.get(P4_PADDING).is_some_and(|p| p.iter().all(|&x| x == 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_devices_sits_at_108_in_p2_and_124_in_p3_p4() {
        let m = Message {
            msg_type: MsgType::DeviceInfoResponse as u8,
            num_devices: 0xA1B2_C3D4,
            ..Message::default()
        };
        assert_eq!(u32_at(&m.encode(Version::P2), 108), 0xA1B2_C3D4);
        assert_eq!(u32_at(&m.encode(Version::P3), 124), 0xA1B2_C3D4);
        assert_eq!(u32_at(&m.encode(Version::P4), 124), 0xA1B2_C3D4);
        assert_eq!(m.encode(Version::P1).len(), 72);
    }

    #[test]
    fn type_bytes_map_both_ways() {
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_u8(t as u8), Some(t));
        }
        assert_eq!(MsgType::from_u8(0), None);
        assert_eq!(MsgType::from_u8(13), None);
        assert_eq!(MsgType::from_u8(255), None);
    }

    #[test]
    fn decode_needs_the_whole_struct() {
        assert!(Message::decode(&[0u8; 71], Version::P1).is_none());
        assert!(Message::decode(&[0u8; 143], Version::P4).is_none());
        assert!(Message::decode(&[0u8; 144], Version::P4).is_some());
    }
}

//! `ttmem export --pid P --format perfetto|memory-viz [-o FILE] [--since WHEN]`: the daemon's
//! `/api/v1/processes/{pid}/export`, written to a file.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use ttmem_export::Format;

use crate::args::ExportArgs;

/// Writes the export; exits 1 when the daemon refuses (no such process, not yours), 2
/// (through the error) when no daemon answers or the file cannot be written.
pub fn export(a: &ExportArgs) -> anyhow::Result<ExitCode> {
    if a.daemon.no_daemon {
        anyhow::bail!("exports come from the daemon's ledger; --no-daemon leaves none to ask");
    }
    let format = Format::parse(&a.format).with_context(|| format!("--format takes {}", Format::NAMES))?;
    let mut path = format!("/api/v1/processes/{}/export?format={}", a.pid, a.format);
    if let Some(since) = &a.since {
        let now_s = ttmem_model::now_ns() / 1_000_000_000;
        path.push_str(&format!("&since_s={}", since_unix_s(since, now_s)?));
    }
    let (ep, _) = super::source::endpoint(&a.daemon)?;
    let (status, body) = ttmem_apiclient::get(&ep, &path)?;
    if !(200..300).contains(&status) {
        let reason = serde_json::from_slice::<ttmem_model::api::ErrorAnswer>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
        eprintln!("ttmem: the daemon answered {status}: {reason}");
        return Ok(ExitCode::from(1));
    }
    let target = a.output.clone().unwrap_or_else(|| format.file_name(a.pid).into());
    if target.as_os_str() == "-" {
        std::io::stdout()
            .lock()
            .write_all(&body)
            .context("writing to standard output")?;
        return Ok(ExitCode::SUCCESS);
    }
    write_whole(&target, &body)?;
    eprintln!(
        "ttmem: wrote {} ({}) to {}; open it in {}",
        ttmem_model::short_bytes(body.len() as u64),
        a.format,
        target.display(),
        match format {
            Format::Perfetto => "https://ui.perfetto.dev or chrome://tracing",
            Format::MemoryViz => "https://pytorch.org/memory_viz",
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a file whole or not at all: a full disk leaves the old file (or none), never half.
fn write_whole(target: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = target.file_name().context("-o names no file")?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(body).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, target));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", target.display()));
    }
    Ok(())
}

/// `--since`: a duration back from now (`90s`, `10m`, `2h`, `1d`) or a Unix time in seconds.
fn since_unix_s(text: &str, now_s: u64) -> anyhow::Result<u64> {
    let t = text.trim();
    let bad = || {
        anyhow::anyhow!("--since {text:?}: give a duration back from now (90s, 10m, 2h, 1d) or a Unix time in seconds")
    };
    if let Ok(unix) = t.parse::<u64>() {
        return Ok(unix);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(now_s.saturating_sub(n.saturating_mul(scale)))
}

#[cfg(test)]
mod tests {
    use super::since_unix_s;

    #[test]
    fn since_takes_durations_and_unix_times() {
        assert_eq!(since_unix_s("90s", 1000).unwrap(), 910);
        assert_eq!(since_unix_s("10m", 1000).unwrap(), 400);
        assert_eq!(since_unix_s("2h", 1000).unwrap(), 0);
        assert_eq!(since_unix_s("1795000000", 1000).unwrap(), 1_795_000_000);
        for bad in ["", "m", "10x", "-5m", "1.5h"] {
            assert!(since_unix_s(bad, 1000).is_err(), "{bad}");
        }
    }
}

//! Value parsers for flags (durations, listen addresses) and the default participant id.

use std::time::Duration;

/// Parses a listen address: `HOST:PORT` where HOST is an IP address (`[::1]` for IPv6) or a
/// name resolved now (`localhost`; the first IPv4 address if it has one), or `:PORT` for all
/// interfaces (0.0.0.0).
pub fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{SocketAddr, ToSocketAddrs};
    let bad = |why: &str| {
        format!("invalid listen address {s:?}: {why} (e.g. :4040, 127.0.0.1:4040, localhost:4040)")
    };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad("not a port number"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    port.parse::<u16>().map_err(|_| bad("not a port number"))?;
    if host.is_empty()
        || host.len() > 253
        || host.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad("not a host name"));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad(&format!("{host} has no address")))
}

/// The longest duration any flag accepts (lease duration, renew deadline, retry period,
/// grace, refresh, waits): one day. Longer values are typos, and bounding them keeps every
/// deadline computed from them (`Instant + duration`) far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses `5s`, `250ms`, `1m30s`, or a bare number of seconds, from 0 up to
/// [`MAX_DURATION`] (1 day).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = if let Ok(secs) = s.trim().parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return Err(format!("invalid duration {s:?}: must be >= 0"));
        }
        // Compared as f64 first: `Duration::from_secs_f64` panics on huge values.
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(s));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 5s, 250ms)"))?
    };
    if d > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(d)
}

/// Like [`parse_duration`], but zero is refused too (periods, timings).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(d)
}

fn too_long(s: &str) -> String {
    format!("invalid duration {s:?}: must be at most 1 day (24h)")
}

/// The default participant id, `<hostname>-<pid>`, made to fit the id rules (1–63 letters,
/// digits, `.`, `_`, `-`, not starting with `.`) for any host name: other characters become
/// `-`, and a host name too long to fit is cut and followed by a hash of the whole name, so
/// two long names with the same beginning still give different ids.
pub fn default_id(host: &str, pid: u32) -> String {
    const MAX: usize = 63;
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    let clean = if clean.is_empty() { "host" } else { clean };
    let suffix = format!("-{pid}");
    if clean.len() + suffix.len() <= MAX {
        return format!("{clean}{suffix}");
    }
    // FNV-1a (64 bit) of the original name: stable across Rust versions and platforms.
    let hash = host.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let hash = format!("-{:08x}", hash as u32);
    let keep = MAX - suffix.len() - hash.len();
    // `clean` is ASCII, so any byte index is a char boundary.
    format!("{}{hash}{suffix}", &clean[..keep])
}

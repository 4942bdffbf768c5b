//! The open-files limit a large simulated fleet runs into: every device has its own UDP socket
//! (and two more when it sits behind an impaired link). Owns reading and raising the limit.

use anyhow::Context;

/// Open files a process needs beyond its fleet's sockets.
pub const SPARE: u64 = 256;

/// The soft and hard limits of open files.
fn limits() -> anyhow::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the open-files limit");
    }
    Ok(limit)
}

/// The most open files this process may raise its limit to.
pub fn hard_limit() -> anyhow::Result<u64> {
    Ok(limits()?.rlim_max)
}

/// Raises the soft limit to what `sockets` UDP sockets (and [`SPARE`]) need, up to the hard
/// limit; fails, saying how to fix it, when the hard limit is too low.
pub fn raise(sockets: u64) -> anyhow::Result<()> {
    let needed = sockets + SPARE;
    let mut limit = limits()?;
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    anyhow::ensure!(
        limit.rlim_max >= needed,
        "this run needs {needed} open files (one UDP socket per simulated device) but the hard \
         limit is {}: raise it (`ulimit -Hn` as root, LimitNOFILE= under systemd, nofile in \
         /etc/security/limits.conf) or simulate fewer devices",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("raising the open-files limit");
    }
    Ok(())
}

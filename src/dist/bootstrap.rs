//! The rendezvous of a job started without MPI (`torchrun`, `syncoder launch`, `srun` without
//! an MPI plugin): rank 0 hands every other rank a few bytes — NCCL's unique id — over TCP.
//! Rank 0 listens on all interfaces at `MASTER_PORT + 1` (torchrun's own store holds
//! `MASTER_PORT` on that host); the others connect to `MASTER_ADDR` at that port, retrying
//! until rank 0 is up.
//!
//! The exchange: each rank sends `MAGIC`, its rank and the world size (u32, little-endian);
//! rank 0 accepts only a hello of its own world from a rank it has not seen, and once all W − 1
//! have arrived sends each a reply: a kind byte (0: the payload, 1: a refusal) and a u32
//! length, then the bytes. Every wait has the one deadline the caller gives (the collective
//! timeout): a rank that never comes ends rank 0's wait with an error naming it, and rank 0
//! that never comes ends the others'.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"syncodr1";
const PAYLOAD: u8 = 0;
const REFUSED: u8 = 1;
/// The largest payload accepted (an NCCL id is 128 bytes).
const MAX_PAYLOAD: usize = 1 << 16;

/// The port of the rendezvous when the launcher's is `master_port`.
pub fn port_for(master_port: u16) -> Result<u16> {
    master_port
        .checked_add(1)
        .with_context(|| format!("MASTER_PORT={master_port}: the rendezvous uses MASTER_PORT + 1, past 65535"))
}

/// Rank 0: waits for the `world - 1` other ranks on `port` and sends each `payload`.
pub fn serve(port: u16, world: usize, payload: &[u8], timeout: Duration) -> Result<()> {
    if payload.len() > MAX_PAYLOAD {
        bail!("rendezvous: a payload of {} bytes", payload.len());
    }
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| {
        format!(
            "rank 0: listening for the other ranks on port {port} (MASTER_PORT + 1): is another job using it? \
             Choose another MASTER_PORT"
        )
    })?;
    serve_on(listener, world, payload, timeout)
}

/// `serve` on a listener already bound.
pub fn serve_on(listener: TcpListener, world: usize, payload: &[u8], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    listener.set_nonblocking(true)?;
    let mut joined: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let mut waiting = world.saturating_sub(1);
    while waiting > 0 {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.set_write_timeout(Some(Duration::from_secs(10)))?;
                match read_hello(&mut s, world) {
                    Ok(r) if joined[r].is_none() => {
                        joined[r] = Some(s);
                        waiting -= 1;
                    }
                    Ok(r) => refuse(
                        &mut s,
                        &format!("rank {r} has already joined this job (from another process)"),
                    ),
                    Err(e) => {
                        let why = format!("{e:#}");
                        eprintln!("warning: rank 0: refused a connection from {peer} on port {port}: {why}");
                        refuse(&mut s, &why);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<usize> = (1..world).filter(|&r| joined[r].is_none()).collect();
                    bail!(
                        "rank 0: rank(s) {missing:?} of {world} did not reach the rendezvous on port {port} within {}s: \
                         did they start, and can they reach this host at MASTER_ADDR?",
                        timeout.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context(format!("rank 0: accepting on port {port}")),
        }
    }
    for (r, s) in joined.iter_mut().enumerate() {
        if let Some(s) = s {
            send(s, PAYLOAD, payload).with_context(|| format!("rank 0: sending the rendezvous to rank {r}"))?;
        }
    }
    Ok(())
}

/// Rank `rank` ≠ 0: the payload from rank 0 at `host:port`.
pub fn join(host: &str, port: u16, rank: usize, world: usize, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let where_ = format!("{host}:{port}");
    let mut last_err = String::new();
    let mut s = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "rank {rank} of {world}: rank 0 did not answer at {where_} (MASTER_ADDR, MASTER_PORT + 1) within {}s \
                 (last: {last_err})",
                timeout.as_secs()
            );
        }
        // Resolved again each time: a cluster's name service may lag the job's start.
        let addrs: Vec<_> = match (host, port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last_err = format!("resolving {host}: {e}");
                Vec::new()
            }
        };
        let mut connected = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, left.min(Duration::from_secs(5))) {
                Ok(s) => {
                    connected = Some(s);
                    break;
                }
                Err(e) => last_err = format!("{a}: {e}"),
            }
        }
        if let Some(s) = connected {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&(rank as u32).to_le_bytes());
    hello.extend_from_slice(&(world as u32).to_le_bytes());
    s.write_all(&hello)
        .with_context(|| format!("rank {rank}: greeting rank 0 at {where_}"))?;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).with_context(|| {
        format!(
            "rank {rank} of {world}: waiting at {where_} for rank 0 to hear from every rank (within {}s)",
            timeout.as_secs()
        )
    })?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_PAYLOAD {
        bail!("rank {rank}: {where_} sent a reply of {len} bytes: not syncoder's rank 0");
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .with_context(|| format!("rank {rank}: reading rank 0's reply at {where_}"))?;
    match head[0] {
        PAYLOAD => Ok(body),
        REFUSED => bail!(
            "rank {rank} of {world}: rank 0 at {where_} refused this rank: {}",
            String::from_utf8_lossy(&body)
        ),
        k => bail!("rank {rank}: {where_} sent a reply of kind {k}: not syncoder's rank 0"),
    }
}

fn read_hello(s: &mut TcpStream, world: usize) -> Result<usize> {
    let mut b = [0u8; 16];
    s.read_exact(&mut b).context("reading its hello")?;
    if &b[..8] != MAGIC {
        bail!("not a syncoder rank (or another version of it)");
    }
    let rank = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
    let theirs = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
    if theirs != world {
        bail!("rank {rank} says the job has {theirs} ranks, rank 0 says {world}: were they started by one launcher?");
    }
    if rank == 0 || rank >= world {
        bail!("a rank {rank} in a job of {world}");
    }
    Ok(rank)
}

fn send(s: &mut TcpStream, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(5 + body.len());
    msg.push(kind);
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    s.write_all(&msg)
}

fn refuse(s: &mut TcpStream, why: &str) {
    // Best effort: the peer may be gone.
    let _ = send(s, REFUSED, why.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        (l, p)
    }

    #[test]
    fn every_rank_gets_rank_0s_bytes_even_when_rank_0_starts_last() {
        let (l, port) = listener();
        let payload: Vec<u8> = (0..128u32).map(|i| (i * 7 % 251) as u8).collect();
        let t = Duration::from_secs(20);
        let others: Vec<_> = (1..4)
            .map(|r| std::thread::spawn(move || join("localhost", port, r, 4, t)))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        serve_on(l, 4, &payload, t).unwrap();
        for h in others {
            assert_eq!(h.join().unwrap().unwrap(), payload);
        }
    }

    #[test]
    fn a_rank_that_never_comes_is_named_and_a_stranger_is_refused() {
        let (l, port) = listener();
        let t = Duration::from_secs(2);
        let one = std::thread::spawn(move || join("127.0.0.1", port, 1, 3, Duration::from_secs(10)));
        // A process of another job (world 5) is refused with the reason, not counted.
        let stranger = std::thread::spawn(move || join("127.0.0.1", port, 2, 5, Duration::from_secs(10)));
        let t0 = Instant::now();
        let e = format!("{:#}", serve_on(l, 3, b"id", t).unwrap_err());
        assert!(e.contains("rank(s) [2] of 3 did not reach"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(6));
        let e = format!("{:#}", stranger.join().unwrap().unwrap_err());
        assert!(e.contains("says the job has 5 ranks"), "{e}");
        // Rank 1 was waiting for the payload; rank 0 gave up and closed: an error, not a hang.
        assert!(one.join().unwrap().is_err());
    }

    #[test]
    fn without_rank_0_a_rank_gives_up_at_its_deadline() {
        let (l, port) = listener();
        drop(l);
        let t0 = Instant::now();
        let e = format!(
            "{:#}",
            join("127.0.0.1", port, 1, 2, Duration::from_secs(1)).unwrap_err()
        );
        assert!(
            e.contains("rank 0 did not answer") && e.contains("MASTER_PORT + 1"),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_port_is_the_launchers_plus_one() {
        assert_eq!(port_for(29500).unwrap(), 29501);
        assert!(port_for(65535).is_err());
    }
}

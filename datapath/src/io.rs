//! The running datapath: one thread per shard, pinned to a core, one UDP socket on
//! `port_base + index`, and a backend (`backend::uring`, or where io_uring can't be set up
//! `backend::fallback`) driving the shard's `ShardLoop`. `Datapath` is the handle the control
//! side holds: it queues commands and wakes the shard.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::backend;
use crate::shard::driver::ShardLoop;
use crate::shard::{Command, ShardCore};
use crate::srtp::SrtpProfile;
use crate::stats::ShardMetrics;
use crate::wake::Waker;
use ringcast_types::route::Router;

pub use crate::shard::driver::EventSink;

/// Which IO backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring when the kernel allows it, else the fallback.
    Auto,
    IoUring,
    /// recvmmsg/sendmmsg via quinn-udp.
    Fallback,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Fallback => "recvmmsg",
        }
    }
}

/// Everything the datapath needs to start (the router comes separately, one per shard).
#[derive(Clone)]
pub struct DatapathConfig {
    pub shards: u16,
    /// Shard i binds `bind_ip:port_base + i` (port_base 0: an ephemeral port each, for tests).
    pub bind_ip: IpAddr,
    pub port_base: u16,
    pub backend: Backend,
    pub certificate: X509,
    pub private_key: PKey<Private>,
    pub srtp_profiles: Vec<SrtpProfile>,
    /// Pin shard i to core i (mod the core count).
    pub pin_threads: bool,
    /// Send slots per shard at most (`shard::OUTBOX_SLOTS` is the default): what sends may be
    /// queued and in flight at once. Memory is touched only as far as it is used.
    pub send_slots: usize,
    /// Pace each transport's bursts (see `pacer`).
    pub pace_bursts: bool,
}

/// Why a command could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such shard")]
    NoSuchShard,
    #[error("the shard's command queue is full")]
    Busy,
    #[error("the shard has stopped")]
    Stopped,
}

/// Commands queued per shard before `send` reports `Busy`.
pub const COMMAND_QUEUE: usize = 4096;

struct ShardHandle<C> {
    commands: SyncSender<Command<C>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    running: Arc<AtomicBool>,
    addr: SocketAddr,
}

/// The running shards, each with its router `R`.
pub struct Datapath<R: Router> {
    shards: Vec<ShardHandle<R::Command>>,
    stop: Arc<AtomicBool>,
    backend: Arc<Mutex<&'static str>>,
}

fn bind(ip: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let domain = if ip.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if ip.is_ipv6() && ip.is_unspecified() {
        // One dual-stack socket serves IPv4 (as mapped addresses) and IPv6.
        s.set_only_v6(false)?;
    }
    set_buffer(&s, SocketBuffer::Receive, SOCKET_RCVBUF, "SO_RCVBUF");
    set_buffer(&s, SocketBuffer::Send, SOCKET_SNDBUF, "SO_SNDBUF");
    // Don't fragment, don't run PMTU discovery per destination: WebRTC packets fit the MTU.
    set_pmtudisc_probe(&s, ip.is_ipv6());
    s.bind(&SocketAddr::new(ip, port).into())?;
    Ok(s.into())
}

/// Socket buffers each shard asks for. The send buffer holds a fan-out burst the NIC has not
/// sent yet (a keyframe to a thousand subscribers is ~15,000 datagrams, ~20 MiB of kernel
/// memory with overhead); the receive buffer holds what arrives while a sweep runs.
pub const SOCKET_SNDBUF: usize = 16 << 20;
pub const SOCKET_RCVBUF: usize = 8 << 20;

/// Which socket buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketBuffer {
    Send,
    Receive,
}

/// Asks for a `bytes` socket buffer: with the FORCE option where the process may (root or
/// CAP_NET_ADMIN), else the plain one, which the kernel caps at `net.core.wmem_max` /
/// `rmem_max`. The shards' sockets and the loadtest's use it.
pub fn request_socket_buffer(s: &impl std::os::fd::AsRawFd, which: SocketBuffer, bytes: usize) {
    let (force, plain) = match which {
        SocketBuffer::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        SocketBuffer::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    };
    let val = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    for opt in [force, plain] {
        // SAFETY: setsockopt on a valid socket with a c_int value of the right size.
        let ok = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        };
        if ok {
            return;
        }
    }
}

/// Sets a shard socket's buffer (see `request_socket_buffer`) and says so once when the
/// result is smaller than asked.
fn set_buffer(s: &socket2::Socket, which: SocketBuffer, want: usize, name: &str) {
    request_socket_buffer(s, which, want);
    let got = if which == SocketBuffer::Send {
        s.send_buffer_size()
    } else {
        s.recv_buffer_size()
    };
    // Linux reports twice the value set (the doubling covers its bookkeeping).
    if let Ok(got) = got
        && got / 2 < want
    {
        tracing::warn!(
            option = name,
            wanted = want,
            got = got / 2,
            "socket buffer smaller than asked; raise net.core.wmem_max / rmem_max (sysctl) or grant CAP_NET_ADMIN"
        );
    }
}

fn set_pmtudisc_probe(s: &socket2::Socket, v6: bool) {
    use std::os::fd::AsRawFd;
    let val: libc::c_int = if v6 {
        libc::IPV6_PMTUDISC_PROBE
    } else {
        libc::IP_PMTUDISC_PROBE
    };
    let (level, opt) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
    };
    // SAFETY: setsockopt on a valid socket with a c_int value of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn pin_to_core(index: u16) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(usize::from(index) % cores, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl<R: Router> Datapath<R> {
    /// Binds every shard's socket and starts the threads; `router(i)` makes shard i's router.
    pub fn start(
        config: DatapathConfig,
        router: impl Fn(u16) -> R,
        events: EventSink,
    ) -> io::Result<Datapath<R>> {
        let ctx = crate::dtls::context(
            &config.certificate,
            &config.private_key,
            &config.srtp_profiles,
        )
        .map_err(io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let backend_name = Arc::new(Mutex::new(match config.backend {
            Backend::Fallback => Backend::Fallback.name(),
            _ if backend::uring::available() => Backend::IoUring.name(),
            _ => Backend::Fallback.name(),
        }));
        if config.backend == Backend::IoUring && !backend::uring::available() {
            return Err(io::Error::other(
                "io_uring was required but can't be set up here",
            ));
        }
        let mut shards = Vec::new();
        for index in 0..config.shards {
            let port = if config.port_base == 0 {
                0
            } else {
                config
                    .port_base
                    .checked_add(index)
                    .ok_or_else(|| io::Error::other("port overflow"))?
            };
            let socket = bind(config.bind_ip, port)?;
            let addr = socket.local_addr()?;
            let (tx, rx) = sync_channel(COMMAND_QUEUE);
            let waker = Arc::new(Waker::new()?);
            let running = Arc::new(AtomicBool::new(true));
            let mut shard = ShardLoop::new(
                ShardCore::with_send_slots(ctx.clone(), router(index), config.send_slots)
                    .pacing(config.pace_bursts),
                ShardMetrics::register(
                    index,
                    *backend_name.lock().unwrap_or_else(|p| p.into_inner()),
                ),
                index,
                rx,
                waker.clone(),
                events.clone(),
                stop.clone(),
            );
            let (r, b, pin, want) = (
                running.clone(),
                backend_name.clone(),
                config.pin_threads,
                config.backend,
            );
            let thread = std::thread::Builder::new()
                .name(format!("ringcast-shard-{index}"))
                .spawn(move || {
                    if pin {
                        pin_to_core(index);
                    }
                    let fallback_socket = socket.try_clone();
                    let res = match want {
                        Backend::Fallback => backend::fallback::run(socket, &mut shard),
                        _ => match backend::uring::run(socket, &mut shard) {
                            Err(e) if want == Backend::Auto && !shard.should_stop() => {
                                tracing::warn!(shard = index, error = %e, "io_uring unavailable; using recvmmsg/sendmmsg");
                                *b.lock().unwrap_or_else(|p| p.into_inner()) = Backend::Fallback.name();
                                match fallback_socket {
                                    Ok(s) => backend::fallback::run(s, &mut shard),
                                    Err(e) => Err(e),
                                }
                            }
                            other => other,
                        },
                    };
                    if let Err(e) = res {
                        tracing::error!(shard = index, error = %e, "shard stopped");
                    }
                    r.store(false, Ordering::Release);
                })?;
            shards.push(ShardHandle {
                commands: tx,
                waker,
                thread: Some(thread),
                running,
                addr,
            });
        }
        let name = *backend_name.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(shards = config.shards, backend = name, "datapath started");
        Ok(Datapath {
            shards,
            stop,
            backend: backend_name,
        })
    }

    /// Queues a command without blocking.
    pub fn send(&self, shard: u16, cmd: Command<R::Command>) -> Result<(), SendError> {
        let h = self
            .shards
            .get(usize::from(shard))
            .ok_or(SendError::NoSuchShard)?;
        match h.commands.try_send(cmd) {
            Ok(()) => {
                h.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SendError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Stopped),
        }
    }

    /// Every shard thread is running.
    pub fn ready(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.running.load(Ordering::Acquire))
    }

    /// The backend the shards run (`io_uring` or `recvmmsg`).
    pub fn backend(&self) -> &'static str {
        *self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each shard's bound address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.addr).collect()
    }

    /// Stops and joins the shard threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.shards {
            s.waker.wake();
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl<R: Router> Drop for Datapath<R> {
    fn drop(&mut self) {
        self.stop();
    }
}

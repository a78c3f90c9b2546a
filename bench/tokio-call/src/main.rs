//! bench/call.c's `rtt` and `tput N 2 W` in tokio.  Each loop is a
//! current-thread runtime on a thread of its own; a call is a message on
//! the target's unbounded mpsc channel, served by a task there that
//! answers through a oneshot, as uvp_call_start's target runs fn and
//! settles the caller's promise.
//!
//!   tokio-call rtt N       N round trips, one at a time, from one runtime
//!                          to the other
//!   tokio-call tput N W    N calls in all between two runtimes, each
//!                          calling the other, W in flight on each
//!
//! Prints one line as bench/call.c does: the count n, the wall time s, ns
//! a round trip (rtt) or calls_s, calls a second (tput).
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Barrier};

type Call = (u64, oneshot::Sender<u64>);

/// With its I/O driver, as a loop that serves sockets runs: it then
/// sleeps in epoll_wait and is woken through an eventfd (mio's Waker), as
/// a libuv loop is.  (Without it a current-thread runtime sleeps on a
/// futex, which no loop with I/O to watch can.)
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime")
}

/// The target's side: answer every call with its argument plus one.
async fn serve(mut rx: mpsc::UnboundedReceiver<Call>) {
    while let Some((v, reply)) = rx.recv().await {
        let _ = reply.send(v + 1);
    }
}

async fn call(to: &mpsc::UnboundedSender<Call>, v: u64) {
    let (o, r) = oneshot::channel();
    to.send((v, o)).expect("target gone");
    assert_eq!(r.await.expect("no answer"), v + 1);
}

fn rtt(n: u64) -> f64 {
    let (tx, rx) = mpsc::unbounded_channel::<Call>();
    let target = std::thread::spawn(move || runtime().block_on(serve(rx)));
    let t0 = Instant::now();
    runtime().block_on(async {
        for i in 0..n {
            call(&tx, i).await;
        }
    });
    let ns = t0.elapsed().as_nanos() as f64;
    drop(tx);
    target.join().expect("target");
    ns
}

/// One side of the ring: serve the other's calls, make `calls` of its
/// own with `w` in flight, and go on serving until both sides are done.
fn side(rx: mpsc::UnboundedReceiver<Call>, to: mpsc::UnboundedSender<Call>,
        calls: u64, w: u64, done: Arc<Barrier>) {
    runtime().block_on(async move {
        let server = tokio::spawn(serve(rx));
        let mut clients = Vec::new();
        for c in 0..w {
            let to = to.clone();
            let mine = calls / w + u64::from(c < calls % w);
            clients.push(tokio::spawn(async move {
                for i in 0..mine {
                    call(&to, i).await;
                }
            }));
        }
        for c in clients {
            c.await.expect("client");
        }
        done.wait().await;
        server.abort();
    });
}

fn tput(n: u64, w: u64) -> f64 {
    let (tx_a, rx_a) = mpsc::unbounded_channel::<Call>();
    let (tx_b, rx_b) = mpsc::unbounded_channel::<Call>();
    let done = Arc::new(Barrier::new(2));
    let d = done.clone();
    let t0 = Instant::now();
    let b = std::thread::spawn(move || side(rx_b, tx_a, n - n / 2, w, d));
    side(rx_a, tx_b, n / 2, w, done);
    b.join().expect("side b");
    t0.elapsed().as_nanos() as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    match (mode, n) {
        ("rtt", n) if n > 0 => {
            let ns = rtt(n);
            println!("tokio-rtt n={} s={:.3} ns={:.0}", n, ns / 1e9, ns / n as f64);
        }
        ("tput", n) if n > 1 => {
            let w: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
            let ns = tput(n, w.max(1));
            println!("tokio-tput n={} loops=2 window={} s={:.3} calls_s={:.0}",
                     n, w, ns / 1e9, n as f64 / (ns / 1e9));
        }
        _ => {
            eprintln!("usage: tokio-call rtt N | tokio-call tput N [W]");
            std::process::exit(2);
        }
    }
}

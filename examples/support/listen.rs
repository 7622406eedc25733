//! Where a listening example listens: `TOLLGATE_EXAMPLE_ADDR`, by default `127.0.0.1:3000`.

use std::io::ErrorKind;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The one environment variable every listening example reads its address from.
const ADDR_VAR: &str = "TOLLGATE_EXAMPLE_ADDR";

/// Listeners on `N` consecutive ports, the first at `TOLLGATE_EXAMPLE_ADDR` (port 0: each on a
/// free port). An address that cannot be used ends the process with a sentence naming it and the
/// variable that picks another, rather than an `Os { code: 98, … }` a reader has to decode.
pub(crate) async fn listen<const N: usize>() -> [TcpListener; N] {
    let text = std::env::var(ADDR_VAR).unwrap_or_else(|_| "127.0.0.1:3000".into());
    let Ok(first) = text.parse::<SocketAddr>() else {
        exit(format!(
            "{ADDR_VAR}={text} is not an address: give an IP address and a port, such as 127.0.0.1:3000"
        ))
    };
    let mut listeners = Vec::with_capacity(N);
    for offset in 0..N {
        let mut addr = first;
        if first.port() != 0 {
            addr.set_port(first.port().saturating_add(offset as u16));
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                let why = match error.kind() {
                    ErrorKind::AddrInUse => "address in use".to_owned(),
                    _ => error.to_string(),
                };
                // A start past the port that failed, with room for all N (0: the system chooses).
                let mut next = first;
                next.set_port(addr.port().checked_add(N as u16).unwrap_or(0));
                exit(format!(
                    "cannot listen on {addr} ({why}): set {ADDR_VAR}={next}"
                ))
            }
        }
    }
    listeners
        .try_into()
        .unwrap_or_else(|_| unreachable!("one listener per port"))
}

fn exit(message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

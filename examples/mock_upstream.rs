//! Mock OpenAI-compatible upstream for the demo (`make run`) and benchmarks.
//!
//! Usage: `mock_upstream [--listen ADDR] [--image-bytes N] [--no-record]` (default
//! 127.0.0.1:8900; with `--image-bytes`, every generated image is padded to N bytes, for image
//! benchmarks; `--no-record` keeps no copy of the requests, so a long benchmark does not grow
//! the mock's memory). Prints
//! `mock upstream listening on ADDR` once it accepts connections, then serves
//! until killed. Behaviour is documented in tests/common/mock.rs.

#[path = "../tests/common/mock.rs"]
mod mock;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str =
    "usage: mock_upstream [--listen ADDR] [--image-bytes N] [--no-record]   (default 127.0.0.1:8900)";

struct Args {
    listen: SocketAddr,
    image_bytes: Option<usize>,
    record: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = String::from("127.0.0.1:8900");
    let mut image_bytes = None;
    let mut record = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--image-bytes" {
            let n = args.next().ok_or("--image-bytes needs a number")?;
            image_bytes = Some(n.parse().map_err(|_| format!("bad --image-bytes {n:?}"))?);
        } else if arg == "--no-record" {
            record = false;
        } else if arg == "--listen" {
            listen = args.next().ok_or("--listen needs an address")?;
        } else if let Some(value) = arg.strip_prefix("--listen=") {
            listen = value.to_string();
        } else if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    let listen = listen
        .parse()
        .map_err(|e| format!("bad --listen address {listen:?}: {e}"))?;
    Ok(Args {
        listen,
        image_bytes,
        record,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("mock_upstream: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let addr = args.listen;
    let mock = match mock::MockUpstream::start_on(addr).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock_upstream: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    mock.set_recording(args.record);
    if let Some(bytes) = args.image_bytes {
        mock.set_image_options(mock::ImageOptions {
            size_bytes: Some(bytes),
            ..mock::ImageOptions::default()
        });
    }
    // Scripts wait for this line, so flush it even when stdout is a pipe.
    println!("mock upstream listening on {}", mock.addr());
    let _ = std::io::stdout().flush();

    // Serve until killed; Ctrl-C exits cleanly (SIGTERM just terminates).
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}

//! `upcase`: the textbook client. Parses arguments, picks the way to talk
//! (TCP streamed or interactive, UDP), runs it from the library and maps what
//! went wrong to the exit codes in `--help`: 0 ok, 1 network or runtime
//! failure, 2 bad usage.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use upcase::client::{self, ClientArgs, ClientError, Prompt, UdpOptions};

fn main() -> ExitCode {
    // clap exits with 2 on bad usage, 0 for --help and --version.
    let args = ClientArgs::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upcase: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &ClientArgs) -> Result<(), ClientError> {
    let interactive = io::stdin().is_terminal();
    let stdout = io::stdout();
    let mut stderr = io::stderr();
    let transport = if args.udp { "UDP" } else { "TCP" };
    if args.udp {
        let options = UdpOptions {
            timeout: args.timeout,
            retries: args.retries,
            mode: args.mode,
        };
        let mut prompt_out = io::stderr();
        let prompt = interactive.then(|| {
            greet(&mut prompt_out, &args.server, transport);
            Prompt {
                out: &mut prompt_out,
                text: "> ",
            }
        });
        return client::udp_session(
            &args.server,
            io::stdin().lock(),
            stdout.lock(),
            &mut stderr,
            prompt,
            options,
        );
    }
    let stream = client::connect(&args.server)?;
    if interactive {
        greet(&mut stderr, &args.server, transport);
        let prompt = Prompt {
            out: &mut stderr,
            text: "> ",
        };
        client::tcp_interactive(stream, io::stdin().lock(), stdout.lock(), prompt)
    } else {
        client::tcp_stream(stream, io::stdin(), stdout.lock())
    }
}

/// The interactive banner, on standard error like the prompt.
fn greet(out: &mut impl Write, server: &client::Target, transport: &str) {
    let _ = writeln!(
        out,
        "upcase: talking to {server} over {transport}; type a line, Ctrl-D quits"
    );
}

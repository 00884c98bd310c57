//! Prints a `server_inputs` or `client_inputs` input (e.g. a crash
//! artifact) as its setup, configuration and list of ops.
//!
//! ```sh
//! cd fuzz && cargo run --release --example show_input -- server_inputs artifacts/server_inputs/crash-…
//! ```

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: show_input server_inputs|client_inputs FILE");
        std::process::exit(2);
    };
    let data = std::fs::read(&file).expect("readable input");
    match target.as_str() {
        "server_inputs" => {
            let (setup, ops) = missive_fuzz::server::parse(&data);
            println!("{setup:?}\n{:#?}", setup.config());
            for (i, op) in ops.iter().enumerate() {
                println!("{i:4}: {op:?}");
            }
        }
        "client_inputs" => {
            let (setup, ops) = missive_fuzz::client::parse(&data);
            println!("{setup:?}\n{:#?}", setup.config());
            for (i, op) in ops.iter().enumerate() {
                println!("{i:4}: {op:?}");
            }
        }
        other => {
            eprintln!("unknown target {other}");
            std::process::exit(2);
        }
    }
}

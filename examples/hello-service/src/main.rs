//! The `hello-service` command: reads the settings, binds, writes the address file, serves.

use std::ffi::OsString;
use std::io;
use std::process::ExitCode;

use hello_service::config::{self, Command, Config};
use hello_service::server::{Server, write_addr_file};
use hello_service::signal;

fn main() -> ExitCode {
    let args = std::env::args_os()
        .skip(1)
        .map(|a: OsString| a.to_string_lossy().into_owned());
    match config::parse(args, |name| std::env::var(name).ok()) {
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version(version)) => {
            println!("hello-service {version}");
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(config)) => match serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hello-service: {e}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("hello-service: {message}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: &Config) -> io::Result<()> {
    let server = Server::bind(config)?;
    let addr = server.local_addr()?;
    signal::stop_on_terminate(server.stopper()?)?;
    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })?;
    }
    eprintln!(
        "hello-service {} listening on http://{addr} ({} workers, fail rate {}, delay {} ms)",
        config.version,
        config.workers,
        config.fail_rate,
        config.delay.as_millis()
    );
    server.run()?;
    eprintln!("hello-service: stopped");
    Ok(())
}

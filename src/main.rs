//! The onnx-lookahead binary: the command line of the library (`onnx_lookahead::cli`).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(onnx_lookahead::cli::main(std::env::args_os()))
}

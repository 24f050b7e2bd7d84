fn main() {
    std::process::exit(ffrtmp::cli::main());
}

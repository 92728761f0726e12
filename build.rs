//! Compiles the fused ops' CUDA kernels (`src/ops/kernels.cu`) to PTX when the `cuda`
//! feature is on. nvcc comes from `NVCC`, else `$CUDA_HOME/bin/nvcc`, else the PATH; the virtual
//! architecture from `CUDA_COMPUTE_CAP` (as for candle's kernels; default 75, which every GPU
//! candle supports can JIT-compile).

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &str = "src/ops/kernels.cu";

fn main() {
    println!("cargo::rerun-if-changed={KERNELS}");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("fused_kernels.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| match std::env::var("CUDA_HOME") {
        Ok(home) => format!("{home}/bin/nvcc"),
        Err(_) => "nvcc".into(),
    });
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg(KERNELS)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on {KERNELS} ({s})"),
        Err(e) => panic!(
            "the cuda feature needs nvcc to compile {KERNELS}: could not run {nvcc} ({e}); \
             set NVCC or CUDA_HOME"
        ),
    }
}

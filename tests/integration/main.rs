mod qwen_model;
mod qwen_parity;

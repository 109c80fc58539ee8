//! The UniFFI binding generator, built from the same UniFFI version as the
//! library: `cargo run -p chatvault-ffi --bin uniffi-bindgen -- generate
//! --library <libchatvault_ffi.so> --language kotlin --out-dir <dir>`.

fn main() {
    uniffi::uniffi_bindgen_main()
}

//! The engine worker binary (wasm-bindgen `--target no-modules`, loaded by `tiller-worker_loader.js`), started by the page.
fn main() {
    tiller_web::worker::start();
}

//! The engine worker binary (trunk `data-type="worker"`), started by the page.
fn main() {
    tiller_web::worker::start();
}

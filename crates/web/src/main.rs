//! The page binary: mounts the Leptos app.
fn main() {
    tiller_web::app::mount();
}

//! Files in and out of the page: a download through a Blob and an object URL, and a picked
//! file's bytes.

use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

/// Offers `data` as a download named `filename`.
pub fn download(data: &[u8], mime: &str, filename: &str) -> Result<(), String> {
    let err = |e: JsValue| format!("the browser refused the download ({e:?})");
    let array = js_sys::Uint8Array::from(data);
    let parts = js_sys::Array::of1(&array);
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(err)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(err)?;
    let doc = document();
    let a: web_sys::HtmlAnchorElement = doc.create_element("a").map_err(err)?.unchecked_into();
    a.set_href(&url);
    a.set_download(filename);
    a.set_class_name("hidden");
    if let Some(body) = doc.body() {
        let _ = body.append_child(&a);
    }
    a.click();
    a.remove();
    // The browser has the data once the download started; free it a little later.
    set_timeout(
        move || {
            let _ = web_sys::Url::revoke_object_url(&url);
        },
        std::time::Duration::from_secs(30),
    );
    Ok(())
}

/// A picked file's bytes, refusing one over `max` bytes before reading it (`what` names the
/// kind of file in the sentence).
pub async fn read_bytes(file: &web_sys::File, max: usize, what: &str) -> Result<Vec<u8>, String> {
    let name = file.name();
    if file.size() > max as f64 {
        return Err(format!("{name} is {:.1} MB, more than the {} MB Tiller reads for {what}", file.size() / 1e6, max >> 20));
    }
    match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
        Ok(buf) => Ok(js_sys::Uint8Array::new(&buf).to_vec()),
        Err(e) => Err(format!("{name} could not be read ({e:?}): pick it again")),
    }
}

/// The first file an `<input type=file>` change event picked, and clears the input so the same
/// file can be picked again.
pub fn picked_file(ev: &web_sys::Event) -> Option<web_sys::File> {
    let input = ev.target()?.dyn_into::<web_sys::HtmlInputElement>().ok()?;
    let file = input.files().and_then(|l| l.get(0));
    input.set_value("");
    file
}

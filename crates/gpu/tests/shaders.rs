//! Every shaders/*.wgsl parses and validates with naga: a broken shader fails without a GPU.

#[test]
fn every_shader_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "expected the kernel shaders in {}", dir.display());
    for path in &files {
        let src = std::fs::read_to_string(path).expect("readable");
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
        // What every WebGPU device grants: unpack2x16float (f16 read in f32) is core WGSL.
        let caps = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&src)));
    }
}

/// The engine embeds the same text the files hold.
#[test]
fn embedded_shaders_are_the_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    for (name, src) in tiller_gpu::kernels::SHADERS {
        assert_eq!(std::fs::read_to_string(dir.join(name)).expect("readable"), src, "{name}");
    }
}

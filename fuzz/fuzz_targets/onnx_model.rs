//! The ONNX reader: protobuf decode (zero-copy, as the loader does it), the lossless walk over
//! the wire format, the loader's own checks (through a file, as the tool reads it), and what the
//! tool does with any model it loaded (`inspect`, `dump`, the rule checks).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onnx_lookahead::generated::onnx::ModelProto;
use onnx_lookahead::io::{lossless, model};
use prost::Message;

fuzz_target!(
    init: {
        onnx_lookahead_fuzz::write_seeds("onnx_model");
    },
    |data: &[u8]| {
        let decoded = ModelProto::decode(Bytes::copy_from_slice(data));
        let unknown = lossless::unknown_fields(data);
        if let Ok(m) = &decoded {
            // The re-encoding of a decoded model is a fixed point (what the "unchanged model
            // re-encodes byte-identical" promise rests on), and its length is what the writer
            // sizes the output mapping by.
            let once = m.encode_to_vec();
            assert_eq!(once.len(), m.encoded_len(), "encoded_len disagrees with encode");
            let again = ModelProto::decode(&once[..]).expect("a re-encoded model decodes");
            assert_eq!(again.encode_to_vec(), once, "re-encoding is not a fixed point");
            // What the writer produces has no field the schema lacks.
            assert_eq!(lossless::unknown_fields(&once), Ok(vec![]), "encoder wrote unknown fields");
            let _ = onnx_lookahead::graph::validate::validate_model(m);
        }
        if let Ok(found) = &unknown {
            for field in found {
                assert!(field.byte_offset < data.len(), "unknown field offset out of range");
            }
        }

        let path = onnx_lookahead_fuzz::workdir().join("model.onnx");
        onnx_lookahead_fuzz::write(&path, data);
        if let Ok(file) = model::load_model(&path) {
            assert!(decoded.is_ok(), "the loader accepted what the decoder refused");
            assert_eq!(Ok(&file.unknown_fields), unknown.as_ref());
            let _ = file.ensure_lossless(false);
            let _ = onnx_lookahead::inspect(&path).map(|r| (r.to_text(), r.to_json()));
            let _ = onnx_lookahead::dump(&path);
        }
    }
);

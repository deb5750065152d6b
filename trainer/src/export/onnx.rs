//! A small ONNX graph builder over `tract_onnx::pb` (the prost types of onnx.proto), so the
//! exporter writes standard ONNX from Rust without Python or a protobuf compiler.

use prost::Message;
use tract_onnx::pb;

/// ONNX element types used by the exporter (values of `TensorProto.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32 = 1,
    I8 = 3,
    I64 = 7,
    F16 = 10,
}

/// An attribute value of a node.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Accumulates nodes and initializers; names are unique by construction (`prefix_counter`).
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    /// A fresh unique tensor name starting with `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a raw initializer and returns its name.
    pub fn initializer(&mut self, hint: &str, elem: Elem, dims: &[i64], raw: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: elem as i32,
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    pub fn f32s(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, Elem::F32, dims, raw)
    }

    pub fn f16s(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let raw = data
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        self.initializer(hint, Elem::F16, dims, raw)
    }

    pub fn i8s(&mut self, hint: &str, dims: &[i64], data: &[i8]) -> String {
        let raw = data.iter().map(|v| *v as u8).collect();
        self.initializer(hint, Elem::I8, dims, raw)
    }

    pub fn i64s(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, Elem::I64, dims, raw)
    }

    /// Adds a single-output node and returns the output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attrs, &out);
        out
    }

    /// Adds a node writing to the given output name (graph outputs have fixed names).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], out: &str) {
        let attribute = attrs.iter().map(|(n, a)| attribute(n, a)).collect();
        let name = self.fresh(&format!("n_{op}"));
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name,
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
    }

    /// Finishes the model: inputs `[N,3,S,S]` f32, outputs `[N,dim]` f32 (batch `N` symbolic).
    pub fn finish(
        self,
        input: (&str, [i64; 3]),
        outputs: &[(&str, i64)],
        extra_outputs: &[String],
        doc: &str,
    ) -> pb::ModelProto {
        let batch = || pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                "N".into(),
            )),
        };
        let fixed = |v: i64| pb::tensor_shape_proto::Dimension {
            denotation: String::new(),
            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)),
        };
        let value_info =
            |name: &str, dims: Option<Vec<pb::tensor_shape_proto::Dimension>>| pb::ValueInfoProto {
                name: name.to_string(),
                r#type: Some(pb::TypeProto {
                    denotation: String::new(),
                    value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                        elem_type: Elem::F32 as i32,
                        shape: dims.map(|dim| pb::TensorShapeProto { dim }),
                    })),
                }),
                ..Default::default()
            };
        let mut in_dims = vec![batch()];
        in_dims.extend(input.1.iter().map(|&v| fixed(v)));
        let mut graph_outputs: Vec<_> = outputs
            .iter()
            .map(|(n, d)| value_info(n, Some(vec![batch(), fixed(*d)])))
            .collect();
        graph_outputs.extend(extra_outputs.iter().map(|n| value_info(n, None)));
        let graph = pb::GraphProto {
            node: self.nodes,
            name: "maskgate".into(),
            initializer: self.initializers,
            input: vec![value_info(input.0, Some(in_dims))],
            output: graph_outputs,
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "maskgate-trainer".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.to_string(),
            graph: Some(graph),
            ..Default::default()
        }
    }
}

/// Opset 13: per-channel QuantizeLinear/DequantizeLinear (`axis`) and all ops used here.
pub const OPSET: i64 = 13;

fn attribute(name: &str, a: &Attr) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType as T;
    let mut p = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match a {
        Attr::Int(i) => {
            p.r#type = T::Int as i32;
            p.i = *i;
        }
        Attr::Ints(v) => {
            p.r#type = T::Ints as i32;
            p.ints = v.clone();
        }
        Attr::Float(f) => {
            p.r#type = T::Float as i32;
            p.f = *f;
        }
    }
    p
}

/// Serialises a model to protobuf bytes.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

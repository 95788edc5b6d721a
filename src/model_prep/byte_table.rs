//! A chain of element-wise ops from one byte to one byte, run as a 256-entry table.
//!
//! In the int8 DenseNet every 1x1 convolution's u8 output goes through dequantize, ReLU,
//! quantize and the offset to i8 before the 3x3 convolution: four passes (1.1 ms per inference
//! on the development machine, `bench --ops`) computing a function of one byte. [`ByteTable`]
//! evaluates tract's own dequantize, quantize and offset ops once, at load time, on all 256
//! input values, and then looks each byte up.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::OptBinByScalar;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, OffsetU8asI8};

use super::{FastQuantizeU8, Fusion, element_wise, sole_consumer};

/// `output[i] = table[input[i]]` for one-byte tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteTable {
    table: [u8; 256],
    output: DatumType,
}

/// Evaluates `op` out of a plan on one input.
fn eval_one(op: &dyn TypedOp, input: Tensor) -> TractResult<Tensor> {
    let outputs = op.eval_out_of_plan(tvec!(input.into_tvalue()))?.context("op needs a plan to run")?;
    Ok(outputs.into_iter().next().context("op gave no output")?.into_tensor())
}

/// Finds `DequantizeLinearF32` on a one-byte tensor, then optionally a max (or min) with a
/// constant scalar, then [`FastQuantizeU8`], then optionally `OffsetU8asI8`, each the only
/// consumer of the one before.
pub(super) fn find(model: &TypedModel, first: usize) -> TractResult<Option<Fusion<ByteTable>>> {
    use tract_linalg::BinOp;
    let node = &model.nodes[first];
    if node.op_as::<DequantizeLinearF32>().is_none() || node.inputs.len() != 1 {
        return Ok(None);
    }
    let input_type = model.outlet_fact(node.inputs[0])?.datum_type;
    if input_type.size_of() != 1 {
        return Ok(None);
    }
    // The ops after the dequantize, as a function of one f32.
    let mut clamp: Option<(BinOp, f32)> = None;
    let mut current = sole_consumer(model, first);
    if let Some(by_scalar) = current.and_then(|n| n.op_as::<OptBinByScalar>().map(|op| (n, op))) {
        let (n, op) = by_scalar;
        let operand = model.outlet_fact(n.inputs[1])?.konst.clone();
        let Some(bound) = operand.filter(|k| k.datum_type() == f32::datum_type() && k.len() == 1) else {
            return Ok(None);
        };
        if n.inputs[0] != OutletId::new(first, 0) || !matches!(op.linalg_op, BinOp::Max | BinOp::Min) {
            return Ok(None);
        }
        clamp = Some((op.linalg_op, bound.try_as_plain_ram()?.as_slice::<f32>()?[0]));
        current = sole_consumer(model, n.id);
    }
    let Some(quantize) = current.filter(|n| element_wise::<FastQuantizeU8>(n).is_some()) else { return Ok(None) };
    let offset = sole_consumer(model, quantize.id).filter(|n| element_wise::<OffsetU8asI8>(n).is_some());
    let last = offset.unwrap_or(quantize);

    // Every input byte, in the input's type, through the same ops.
    let bytes: Vec<u8> = (0..=255).collect();
    // SAFETY: 256 bytes for 256 values of a one-byte type; any bit pattern is a valid byte.
    let all = unsafe { Tensor::from_raw_dt(input_type, &[256], &bytes)? };
    let dequantized = eval_one(&*node.op, all)?;
    let clamped = match clamp {
        None => dequantized,
        Some((op, bound)) => {
            let values = dequantized.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            // Finite values (a dequantized byte): max and min have one answer.
            ensure!(values.iter().all(|v| v.is_finite()) && bound.is_finite());
            let clamped: Vec<f32> =
                values.iter().map(|&v| if op == BinOp::Max { v.max(bound) } else { v.min(bound) }).collect();
            tensor1(&clamped)
        }
    };
    let mut table_tensor = eval_one(&*quantize.op, clamped)?;
    if let Some(offset) = offset {
        table_tensor = eval_one(&*offset.op, table_tensor)?;
    }
    let table: [u8; 256] = table_tensor.as_bytes().try_into().context("table of 256 bytes")?;
    let output = last.outputs[0].fact.datum_type;
    ensure!(output.size_of() == 1);
    Ok(Some(Fusion { inputs: tvec![node.inputs[0]], last: last.id, op: ByteTable { table, output } }))
}

impl Op for ByteTable {
    fn name(&self) -> StaticName {
        "ByteTable".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ByteTable {
    op_out_of_plan!();

    fn eval(&self, _context: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs.first().context("ByteTable takes an input")?;
        ensure!(input.datum_type().size_of() == 1, "ByteTable input is {:?}", input.datum_type());
        // SAFETY: one-byte values, each written from the table below.
        let mut output = unsafe { Tensor::uninitialized_dt(self.output, input.shape())? };
        for (x, y) in input.as_bytes().iter().zip(output.as_bytes_mut()) {
            *y = self.table[usize::from(*x)];
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for ByteTable {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

//! Load-time preparation of the tract graph, and how it is evaluated: merges the rows of 1x1
//! convolutions before tract's code generation, replaces ops whose generic implementation is
//! slow with equivalent ones, and fuses chains of them. Results are bit-identical (tested), so
//! the model's verdicts and parity figures do not change.
//!
//! On the int8 DenseNet (development machine, 1 thread, `bench --ops`, README "Speed"): tract
//! alone 39.9 ms per inference, prepared about 6.4 ms (with the AVX2 dispatch of `crate::simd`).
//! - [`merge_pointwise_rows`]: one matmul per 1x1 convolution, not one per image row.
//! - [`eval_node`]: `vzeroupper` after each node on x86, for the SSE code after tract's AVX kernels.
//! - [`FastQuantizeU8`]: tract's `QuantizeLinearU8` rounds through a branchy scalar
//!   `round_ties_to_even`; this computes the same bytes with max/min and the float
//!   round-to-nearest-even trick, which vectorise on SSE2 and NEON alike.
//! - [`Im2ColK4`]: the im2col of 8-bit convolutions for K=4-inner int8 kernels; with
//!   [`tap_major_convolutions`], in an order where it copies instead of interleaving.
//! - [`PackK4`]: the activation packing of 1x1 convolutions for the same kernels.
//! - `PackAmxA` (x86): the same packing for tract's AMX int8 kernels, a byte transpose.
//! - [`AffineReluQuantize`]: batch norm + ReLU + quantize + offset in one pass.
//! - [`ConcatAffineReluQuantize`]: the same, reading DenseNet's concatenated features in place.
//! - [`PackedAffineReluQuantize`]: either of those writing the 1x1 convolution's packed panels.
//! - [`ByteTable`]: byte-to-byte chains (dequantize, ReLU, quantize, offset) as a lookup table.
//! - [`FastPool`]: max and average pools with each kernel tap a contiguous run of the output row.
//! - [`pool_bytes`]: the stem's max pool on the convolution's u8 output, before its dequantize.
//! - [`row_stores`]: the 1x1 convolutions' matmuls turned so that tract's 16x16 VNNI kernel
//!   stores their output a row at a time instead of a byte at a time; `amx_row_stores` (x86)
//!   the same for its AMX kernel, with the operands repacked for their new sides.
//! - `u8_weights` (x86): the matmuls on tract's 16x16 VNNI kernel run on a build of it that takes
//!   the weights already offset to u8 (done once here), without a `vpaddb` per product.

mod affine_relu_quantize;
mod byte_table;
mod im2col_k4;
#[cfg(target_arch = "x86_64")]
mod pack_amx;
mod pack_k4;
mod pool;

pub use affine_relu_quantize::{AffineReluQuantize, ConcatAffineReluQuantize, PackedAffineReluQuantize};
pub use byte_table::ByteTable;
pub use im2col_k4::Im2ColK4;
#[cfg(target_arch = "x86_64")]
pub use pack_amx::PackAmxA;
pub use pack_k4::PackK4;
pub use pool::FastPool;
use tract_linalg::mmm::MMMInputFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::OptMaxPool;
use tract_onnx::tract_core::ops::cnn::OptSumPool;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_onnx::tract_core::ops::matmul::optimized::MatMulOperand;
use tract_onnx::tract_core::ops::matmul::pack::OptMatMulPack;
use tract_onnx::tract_core::ops::quant::QuantizeLinearU8;

/// 1.5 * 2^23: adding and subtracting it rounds any |x| <= 2^22 to the nearest integer, ties to
/// even (the default IEEE rounding mode), in two vectorisable instructions.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `QuantizeLinearU8` semantics: `clamp(round_ties_even(x * scale) + zero_point, 0, 255)`, where
/// tract's `scale` field already holds 1 / (ONNX y_scale).
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn quantize_u8(x: f32, scale: f32, zero_point: f32) -> u8 {
    let y = x * scale;
    // tract maps NaN to the zero point (NaN as i32 is 0); a select keeps that and vectorises.
    let y = if y.is_nan() { 0.0 } else { y };
    // Clamping first keeps the rounding trick in range and does not change the result: anything
    // below -256 or above 512 saturates to 0 or 255 after the zero point either way. max/min,
    // not clamp: clamp's NaN-propagating compare-and-select is not one vector instruction.
    let y = y.max(-256.0).min(512.0);
    let rounded = (y + ROUND_MAGIC) - ROUND_MAGIC;
    let clamped = (rounded + zero_point).max(0.0).min(255.0);
    // SAFETY: NaN was replaced above and max/min bound the value to 0..=255, so it is finite
    // and fits i32. The checked `as` conversion would be the same value but stops LLVM from
    // vectorising the loop (measured: 1.15 against 0.38 ns per value).
    unsafe { clamped.to_int_unchecked::<i32>() as u8 }
}

/// [`quantize_u8`] for `x >= 0` (or `+inf`) and a finite `scale > 0`, where its NaN select and
/// its two lower clamps cannot change anything: four vector instructions fewer after a ReLU.
#[inline(always)]
fn quantize_non_negative_u8(x: f32, scale: f32, zero_point: f32) -> u8 {
    let y = (x * scale).min(512.0);
    let rounded = (y + ROUND_MAGIC) - ROUND_MAGIC;
    let clamped = (rounded + zero_point).min(255.0);
    // SAFETY: `y` is in 0..=512 (x and scale are non-negative and not NaN), so `clamped` is in
    // 0..=255.
    unsafe { clamped.to_int_unchecked::<i32>() as u8 }
}

tract_onnx::tract_core::element_wise_oop!(fast_quantize_u8,
 FastQuantizeU8 {
     scale: f32,
     zero_point: u8
 },
 [f32] => u8 |op, xs, ys| {
     // Locals, not field reads in the loop: the u8 stores could alias them for the optimiser.
     let (scale, zero_point) = (op.scale, f32::from(op.zero_point));
     crate::simd::with_avx2!(xs.iter().zip(ys.iter_mut()).for_each(|(x, y)| *y = quantize_u8(*x, scale, zero_point)));
     Ok(())
 };
 info: |op: &FastQuantizeU8| Ok(vec![format!("scale: {} zero_point: {}", op.scale, op.zero_point)])
);

/// Evaluates one node of a plan; pass it to tract's `run_plan_with_eval` in place of
/// `tract_core::plan::eval`.
///
/// On x86 it then clears the upper halves of the vector registers (`vzeroupper`). tract's
/// AVX2/AVX-512 assembly kernels return without doing so, and code compiled for the baseline
/// x86-64 target (SSE-encoded: every op tract does not run in assembly, ours, and the rest of the
/// frame loop) then pays a false dependency on the stale upper state on each vector instruction.
/// Measured on the development machine: FastQuantizeU8 2.0 -> 0.67 ns per value, OptBinChain
/// 0.60 -> 0.28. Elsewhere this is `plan::eval` itself.
pub fn eval_node(
    context: &EvalContext,
    op_state: Option<&mut (dyn OpState + 'static)>,
    node: &TypedNode,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    let outputs = tract_onnx::tract_core::plan::eval(context, op_state, node, inputs);
    clear_upper_vector_state();
    outputs
}

#[inline(always)]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX was detected at run time, so the instruction exists; the compiler knows the
        // intrinsic clobbers the upper register halves.
        unsafe { std::arch::x86_64::_mm256_zeroupper() }
    }
}

/// A chain of nodes found to replace: `op` reads `inputs` and stands for node `last`'s output.
struct Fusion<O> {
    inputs: TVec<OutletId>,
    last: usize,
    op: O,
}

/// Applies every fusion `find` reports, starting from each node; returns how many. Patches append
/// nodes and leave the fused ones unreachable (not planned), so the ids found stay valid.
fn fuse_all<O: TypedOp>(
    model: &mut TypedModel,
    find: fn(&TypedModel, usize) -> TractResult<Option<Fusion<O>>>,
) -> TractResult<usize> {
    let fusions =
        (0..model.nodes.len()).filter_map(|id| find(model, id).transpose()).collect::<TractResult<Vec<_>>>()?;
    let count = fusions.len();
    for fusion in fusions {
        let mut patch = TypedModelPatch::new(fusion.op.name());
        let taps = patch.taps(model, &fusion.inputs)?;
        let name = format!("{}.{}", model.nodes[fusion.last].name, fusion.op.name());
        let fused = patch.wire_node(name, fusion.op, &taps)?[0];
        patch.shunt_outside(model, OutletId::new(fusion.last, 0), fused)?;
        patch.apply(model)?;
    }
    Ok(count)
}

/// The only node that reads `node`'s output: none when the output has several readers or is
/// also a model output (then its value is needed as it is).
fn sole_consumer(model: &TypedModel, node: usize) -> Option<&TypedNode> {
    if model.outputs.iter().any(|o| o.node == node) {
        return None;
    }
    let outputs = &model.nodes[node].outputs;
    match (outputs.len(), outputs.first().map(|o| o.successors.as_slice())) {
        (1, Some([inlet])) => Some(&model.nodes[inlet.node]),
        _ => None,
    }
}

/// `node`'s element-wise mini-op, if it is a `T`.
/// The value at `outlet` if it is a constant single f32 (a by-scalar op's operand).
fn constant_f32(model: &TypedModel, outlet: OutletId) -> TractResult<Option<f32>> {
    let Some(konst) = model.outlet_fact(outlet)?.konst.as_ref() else { return Ok(None) };
    if konst.datum_type() != f32::datum_type() || konst.len() != 1 {
        return Ok(None);
    }
    Ok(Some(konst.try_as_plain_ram()?.as_slice::<f32>()?[0]))
}

fn element_wise<T: ElementWiseMiniOp>(node: &TypedNode) -> Option<&T> {
    node.op_as::<ElementWiseOp>().and_then(|op| op.0.downcast_ref::<T>())
}

/// tract's optimisation with this module's steps: declutter, [`merge_pointwise_rows`], tract's
/// code generation (without a second declutter, which would split the rows again), then
/// [`prepare`]. Outputs are bit-identical to `into_optimized` (tested).
pub fn optimize_and_prepare(model: TypedModel) -> TractResult<(TypedModel, Prepared)> {
    use std::time::Instant;
    let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
    let started = Instant::now();
    let mut model = model.into_decluttered()?;
    let decluttered = Instant::now();
    let merged = merge_pointwise_rows(&mut model)?;
    let rows_merged = Instant::now();
    model.optimize()?;
    let optimized = Instant::now();
    let mut prepared = prepare(&mut model)?;
    prepared.pointwise_rows_merged = merged;
    // Load time counts toward cold start (README "Speed").
    log::debug!(
        "declutter {:.0} ms, merge rows {:.0} ms, tract optimise {:.0} ms, prepare {:.0} ms",
        ms(started, decluttered),
        ms(decluttered, rows_merged),
        ms(rows_merged, optimized),
        ms(optimized, Instant::now())
    );
    Ok((model, prepared))
}

/// On a decluttered model: runs each quantized 1x1 convolution (an `EinSum` after declutter)
/// over its feature map as one matrix, not one per image row. tract keeps H and W as separate
/// axes and makes H a batch axis, so a 32x32 map is 32 matmuls with N = 32; merged, it is one
/// with N = 1024 (matmul 3.97 -> 3.67 ms, packing 0.42 -> 0.28 ms on the development machine).
/// The reshapes are free (contiguous) and the sums are integers, so the result is the same.
pub fn merge_pointwise_rows(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let mut merged = 0;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let Some(einsum) = node.op_as::<EinSum>() else { continue };
        if einsum.q_params.is_none() {
            continue;
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let output = &node.outputs[0].fact;
        let (Some(in_shape), Some(out_shape)) = (input.shape.as_concrete(), output.shape.as_concrete()) else {
            continue;
        };
        // [1, C, H, W] -> [1, O, H, W]: H and W are the last two axes of input 0 and of the
        // output, and of no other input (weights, bias, quantization parameters).
        if in_shape.len() != 4 || out_shape.len() != 4 || in_shape[2] < 2 {
            continue;
        }
        let axes = &einsum.axes;
        let (Ok(h), Ok(w)) = (axes.axis((InOut::In(0), 2)), axes.axis((InOut::In(0), 3))) else { continue };
        let only_in_data = |axis: &tract_onnx::tract_core::axes::Axis, position: usize| {
            axis.inputs[0].as_slice() == [position]
                && axis.outputs[0].as_slice() == [position]
                && axis.inputs.iter().skip(1).all(|i| i.is_empty())
        };
        if !only_in_data(h, 2) || !only_in_data(w, 3) {
            continue;
        }
        let h_repr = h.repr;
        let new_axes = axes.remove_axis(h_repr)?;
        let (height, width) = (in_shape[2], in_shape[3]);
        let mut patch = TypedModelPatch::new("merge_pointwise_rows");
        let mut taps = patch.taps(model, &node.inputs)?;
        taps[0] = patch.wire_node(
            format!("{}.merge_rows", node.name),
            AxisOp::Reshape(2, tvec![height.to_dim(), width.to_dim()], tvec![(height * width).to_dim()]),
            &[taps[0]],
        )?[0];
        let op = EinSum { axes: new_axes, ..einsum.clone() };
        let wire = patch.wire_node(format!("{}.merged", node.name), op, &taps)?[0];
        let wire = patch.wire_node(
            format!("{}.split_rows", node.name),
            AxisOp::Reshape(2, tvec![(height * width).to_dim()], tvec![height.to_dim(), width.to_dim()]),
            &[wire],
        )?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.apply(model)?;
        merged += 1;
    }
    Ok(merged)
}

/// What [`prepare`] changed, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub quantize_ops_replaced: usize,
    pub im2col_ops_replaced: usize,
    /// Activation packings of 1x1 convolutions for K=4-inner int8 kernels ([`PackK4`]).
    pub packs_replaced: usize,
    /// Activation packings of 1x1 convolutions for tract's AMX int8 kernels (`PackAmxA`, x86).
    pub amx_packs_replaced: usize,
    /// Batch norm + ReLU + quantize (+ offset to i8) chains run as one [`AffineReluQuantize`].
    pub affine_relu_quantize_fused: usize,
    /// Dequantize (+ ReLU) + quantize (+ offset) chains on bytes run as one [`ByteTable`].
    pub byte_tables_fused: usize,
    /// Quantized 1x1 convolutions run as one matmul over the feature map ([`merge_pointwise_rows`]).
    pub pointwise_rows_merged: usize,
    /// Channel concatenations read in place by their [`AffineReluQuantize`]
    /// ([`ConcatAffineReluQuantize`]).
    pub concats_read_in_place: usize,
    /// Pre-activations ([`ConcatAffineReluQuantize`], [`AffineReluQuantize`]) that write their
    /// 1x1 convolution's K=4-inner panels themselves ([`PackedAffineReluQuantize`]).
    pub pre_activations_packed: usize,
    /// Max and average pools run as [`FastPool`].
    pub pools_replaced: usize,
    /// [`Im2ColK4`]s switched to tap-major K, with their convolution's weights permuted to match
    /// ([`tap_major_convolutions`]).
    pub im2col_tap_major: usize,
    /// Matmuls with their operands swapped so the kernel stores whole rows ([`row_stores`],
    /// and `amx_row_stores` on x86).
    pub matmuls_turned_for_row_stores: usize,
    /// Max pools moved before their input's dequantize, onto bytes ([`pool_bytes`]).
    pub pools_on_bytes: usize,
    /// Matmuls run by tract's 16x16 VNNI kernel built to take A as u8, their weights offset by
    /// 128 at load (`u8_weights`, x86).
    pub matmuls_on_u8_weights: usize,
}

/// Moves each [`FastPool`] max pool whose input is a `DequantizeLinearF32` of u8 values with a
/// positive scale, optionally followed by a ReLU (a max with a constant), each read by nothing
/// else, before the dequantize: onto the bytes ([`FastPool::on_bytes`]). Both steps never
/// reverse an order, so the max of their outputs is their output of the max, the same bits.
/// DenseNet's stem pools its 64x64 map to 32x32: a quarter of the bytes to pool, a quarter of the
/// values to dequantize and ReLU.
pub fn pool_bytes(model: &mut TypedModel) -> TractResult<usize> {
    use tract_linalg::BinOp;
    use tract_onnx::tract_core::ops::binary::OptBinByScalar;
    use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;
    let mut moved = 0;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let Some(on_bytes) = node.op_as::<FastPool>().and_then(FastPool::on_bytes) else { continue };
        let [input] = node.inputs.as_slice() else { continue };
        let read_by_one = |from: usize, to: usize| sole_consumer(model, from).map(|n| n.id) == Some(to);
        // An optional ReLU between the dequantize and the pool: a max with a finite constant.
        let mut producer = &model.nodes[input.node];
        let mut relu = None;
        if let Some(op) = producer.op_as::<OptBinByScalar>() {
            let finite = constant_f32(model, producer.inputs[1])?.is_some_and(f32::is_finite);
            if op.linalg_op != BinOp::Max || !finite || !read_by_one(producer.id, id) {
                continue;
            }
            relu = Some(producer);
            producer = &model.nodes[producer.inputs[0].node];
        }
        let Some(dequantize) = producer.op_as::<DequantizeLinearF32>() else { continue };
        let [bytes] = producer.inputs.as_slice() else { continue };
        let next = relu.map_or(id, |n| n.id);
        let positive = dequantize.scale > 0.0 && dequantize.scale.is_finite();
        if !positive || model.outlet_fact(*bytes)?.datum_type != u8::datum_type() || !read_by_one(producer.id, next) {
            continue;
        }
        let mut patch = TypedModelPatch::new("pool_bytes");
        let tap = patch.tap_model(model, *bytes)?;
        let pooled = patch.wire_node(format!("{}.on_bytes", node.name), on_bytes, &[tap])?[0];
        let mut wire = patch.wire_node(format!("{}.dequantize", node.name), dequantize.clone(), &[pooled])?[0];
        if let Some(relu) = relu {
            let bound = patch.tap_model(model, relu.inputs[1])?;
            wire = patch.wire_node(format!("{}.relu", node.name), relu.op.clone(), &[wire, bound])?[0];
        }
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.apply(model)?;
        moved += 1;
    }
    Ok(moved)
}

/// The kernel [`row_stores`] knows: it keeps one row of C (one M index, 16 N) per register, and
/// its store writes a row with one narrowing `vpmovdb` when C's N axis is contiguous, but
/// element by element (`vpextrd` + a byte store, 256 per tile) when it is not.
const ROW_STORE_KERNEL: &str = "avx512vnni_mmm_i32_16x16";

/// Swaps the operands of the matmuls run by [`ROW_STORE_KERNEL`] whose 8-bit output has its M
/// axis contiguous and its N axis not, so that the kernel's rows are the output's contiguous
/// runs. tract makes M the larger dimension (`EinSumMatMul::codegen`), so a 1x1 convolution's
/// matmul has M = positions, the output's contiguous axis, and N = channels: every tile was
/// stored byte by byte (`perf annotate`: about a tenth of the kernel's time). C = A B and
/// C^T = B^T A^T compute the same integers; this kernel packs A and B alike (both
/// `PackedI8K4(16)`), so the packed operands are used as they are; per-column steps become
/// per-row ones and the store's axes swap. Bit-identical (the whole-model test).
pub fn row_stores(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    let mut turned = 0;
    for node in &mut model.nodes {
        let Some(op) = node.op_as::<OptMatMul>() else { continue };
        let Some(turned_op) = turned_for_row_stores(op)? else { continue };
        node.op = Box::new(turned_op);
        turned += 1;
    }
    Ok(turned)
}

/// `op` with A and B swapped, where [`row_stores`] applies (see there); `None` elsewhere.
fn turned_for_row_stores(
    op: &tract_onnx::tract_core::ops::matmul::optimized::OptMatMul,
) -> TractResult<Option<tract_onnx::tract_core::ops::matmul::optimized::OptMatMul>> {
    // Each packing pair must read the same for A and B: the packed operands swap as they are.
    turned(op, ROW_STORE_KERNEL, |a, b| a == b, |operand| Ok(Some(operand.clone())))
}

/// `op`, run by `kernel_name`, with A and B swapped, when its 8-bit output has its M axis
/// contiguous and its N axis not, and `packings_fit` accepts each packing pair it may use (A's
/// format, B's), none with a panel extractor; `None` otherwise. `operand` gives what each
/// operand becomes on its new side (`None`: no turn); inputs wired from other nodes are the
/// caller's to repack.
fn turned(
    op: &tract_onnx::tract_core::ops::matmul::optimized::OptMatMul,
    kernel_name: &str,
    packings_fit: impl Fn(&dyn MMMInputFormat, &dyn MMMInputFormat) -> bool,
    operand: impl Fn(&MatMulOperand) -> TractResult<Option<MatMulOperand>>,
) -> TractResult<Option<tract_onnx::tract_core::ops::matmul::optimized::OptMatMul>> {
    use tract_linalg::mmm::OutputStoreSpec;
    use tract_onnx::tract_core::ops::matmul::optimized::{OptMatMul, ProtoFusedSpec};
    let [kernel] = op.mmm.as_slice() else { return Ok(None) };
    let (Some(m_axis), Some(n_axis)) = (op.c_m_axis, op.c_n_axis) else { return Ok(None) };
    let Some(shape) = op.c_fact.shape.as_concrete() else { return Ok(None) };
    let strides = Tensor::natural_strides(shape);
    if kernel.name() != kernel_name
        || op.c_fact.datum_type.size_of() != 1
        || strides[m_axis] != 1
        || strides[n_axis] == 1
    {
        return Ok(None);
    }
    let packings = kernel.packings();
    let mut micro_ops = Vec::with_capacity(op.micro_ops.len());
    for micro_op in &op.micro_ops {
        micro_ops.push(match micro_op {
            ProtoFusedSpec::AddMatMul { geo, a, b, packings: chosen } => {
                let fit = chosen.iter().all(|(index, extractor)| {
                    extractor.is_none() && packings.get(*index).is_some_and(|(pa, pb)| packings_fit(&**pa, &**pb))
                });
                if !fit {
                    return Ok(None);
                }
                let mut geo = geo.clone();
                std::mem::swap(&mut geo.c_to_a_axis_mapping, &mut geo.c_to_b_axis_mapping);
                let (Some(new_a), Some(new_b)) = (operand(b)?, operand(a)?) else { return Ok(None) };
                ProtoFusedSpec::AddMatMul { geo, a: new_a, b: new_b, packings: chosen.clone() }
            }
            ProtoFusedSpec::BinPerRow(slot, bin, map) => ProtoFusedSpec::BinPerCol(*slot, *bin, map.clone()),
            ProtoFusedSpec::BinPerCol(slot, bin, map) => ProtoFusedSpec::BinPerRow(*slot, *bin, map.clone()),
            ProtoFusedSpec::AddRowColProducts(rows, cols) => ProtoFusedSpec::AddRowColProducts(*cols, *rows),
            ProtoFusedSpec::Store(specs) => {
                let mut swapped = Vec::with_capacity(specs.len());
                for spec in specs {
                    let OutputStoreSpec::View { m_axis, n_axis, mr, nr } = spec else { return Ok(None) };
                    swapped.push(OutputStoreSpec::View { m_axis: *n_axis, n_axis: *m_axis, mr: *nr, nr: *mr });
                }
                ProtoFusedSpec::Store(swapped)
            }
            step @ (ProtoFusedSpec::BinScalar(..) | ProtoFusedSpec::LeakyRelu(_) | ProtoFusedSpec::Scaler(_)) => {
                step.clone()
            }
            // A C-shaped addend carries its own store layout: left as tract made it.
            ProtoFusedSpec::AddUnicast(..) => return Ok(None),
        });
    }
    OptMatMul::new(
        op.mmm.clone(),
        op.mode_picker.clone(),
        op.c_fact.clone(),
        Some(n_axis),
        Some(m_axis),
        micro_ops,
        op.trivial_packing,
    )
    .map(Some)
}

/// The AMX int8 kernel [`amx_row_stores`] knows. Its tile rows are M (one register per row of
/// 16 N) like [`ROW_STORE_KERNEL`]'s, with the same two stores; it takes A as `PackedAmxA` and B
/// as `PackedI8K4`, both 16 wide.
#[cfg(target_arch = "x86_64")]
const AMX_KERNEL: &str = "avx512amx_mmm_i32_16x16";

/// [`row_stores`] for [`AMX_KERNEL`], where A and B are packed differently, so the operands are
/// repacked at load time: for each matmul whose A is activations packed by [`PackAmxA`] for it
/// alone and whose B is weights baked into it (a 1x1 convolution with more positions than output
/// channels), the weights become A (`PackedAmxA`, [`pack_amx::amx_weights`]), the activations
/// become B (packed `PackedI8K4` by [`PackK4`], which the pre-activation fusion then writes in
/// place), and the matmul is turned. On a Sapphire Rapids VM, 20 such matmuls at 128x128 were
/// stored byte by byte, and their activations packed by a transpose.
#[cfg(target_arch = "x86_64")]
pub fn amx_row_stores(model: &mut TypedModel) -> TractResult<usize> {
    use tract_linalg::mmm::MMMInputValue;
    use tract_linalg::x86_64::amx::PackedAmxA;
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    // The formats `amx_weights` and `PackAmxA::as_k4` make.
    let fits = |a: &dyn MMMInputFormat, b: &dyn MMMInputFormat| {
        a.downcast_ref::<PackedAmxA>().is_some_and(|a| a.r == 16)
            && b.downcast_ref::<tract_linalg::pack::PackedI8K4>().is_some_and(|b| b.r == 16)
    };
    let mut turned_count = 0;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let Some(matmul) = node.op_as::<OptMatMul>() else { continue };
        let products = products(matmul);
        // The weights are baked into the matmul as a constant operand.
        let [(MatMulOperand::Input(a), MatMulOperand::Const(_))] = products.as_slice() else { continue };
        let activations = node.inputs[*a];
        let Some(pack) = model.nodes[activations.node].op_as::<PackAmxA>() else { continue };
        if model.nodes[activations.node].outputs[0].successors.as_slice() != [InletId::new(id, *a)] {
            continue;
        }
        let repack = |operand: &MatMulOperand| -> TractResult<Option<MatMulOperand>> {
            Ok(match operand {
                // The activations: `PackK4` below packs them for B.
                MatMulOperand::Input(i) => Some(MatMulOperand::Input(*i)),
                MatMulOperand::Const(weights) => pack_amx::amx_weights(&**weights)?
                    .map(|repacked| MatMulOperand::Const(Box::new(repacked) as Box<dyn MMMInputValue>)),
            })
        };
        let Some(turned_op) = turned(matmul, AMX_KERNEL, fits, repack)? else { continue };
        let k4 = pack.as_k4();
        model.nodes[activations.node].outputs[0].fact = k4.output_fact().clone();
        model.nodes[activations.node].op = Box::new(k4);
        model.nodes[id].op = Box::new(turned_op);
        turned_count += 1;
    }
    Ok(turned_count)
}

/// Runs each matmul of [`ROW_STORE_KERNEL`] whose A is weights (baked into it, or a constant read
/// by it alone) on `avx512vnni_mmm_i32_16x16_u8a`, tract's kernel built from the same assembly
/// without the `vpaddb` that adds 128 to every A byte it broadcasts (`.cargo/vendor/tract-linalg`),
/// with the weights' packed bytes offset by 128 (xor 0x80) once here. `VPDPBUSD` multiplies u8 by i8, so tract's kernel adds 128 to each broadcast A byte
/// in its K loop and removes `128 * sum(B)` per column afterwards; with A stored offset, the loop
/// is one broadcast and one `VPDPBUSD` per row, the correction unchanged, the i32 sums the same
/// (the padding's zero bytes become 128 as the `vpaddb` made them). On a core with two 512-bit
/// ports the `vpaddb` took a port slot from every `VPDPBUSD`: on an Emerald Rapids VM without
/// AMX all matmuls went 7.7 -> 5.4 ms per inference (README "Speed"). Run after [`row_stores`]:
/// the matmuls it turns have the weights as A afterwards, so they are swapped too.
#[cfg(target_arch = "x86_64")]
pub fn u8_weights(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::konst::Const;
    use tract_onnx::tract_core::ops::matmul::optimized::{OptMatMul, ProtoFusedSpec};
    let variant = &*tract_linalg::x86_64::mmm::avx512vnni_mmm_i32_16x16_u8a;
    let mut swapped = 0;
    'nodes: for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let Some(matmul) = node.op_as::<OptMatMul>() else { continue };
        let [kernel] = matmul.mmm.as_slice() else { continue };
        if kernel.name() != ROW_STORE_KERNEL {
            continue;
        }
        let mut micro_ops = Vec::with_capacity(matmul.micro_ops.len());
        // Constant nodes holding the weights, with their offset tensors.
        let mut constants: Vec<(usize, Tensor)> = Vec::new();
        for micro_op in &matmul.micro_ops {
            let ProtoFusedSpec::AddMatMul { geo, a, b, packings } = micro_op else {
                micro_ops.push(micro_op.clone());
                continue;
            };
            if packings.iter().any(|(_, extractor)| extractor.is_some()) {
                continue 'nodes;
            }
            let a = match a {
                MatMulOperand::Const(weights) => {
                    let Some(offset) = offset_k4_weights(&**weights)? else { continue 'nodes };
                    MatMulOperand::Const(Box::new(offset) as Box<dyn tract_linalg::mmm::MMMInputValue>)
                }
                MatMulOperand::Input(slot) => {
                    let weights = node.inputs[*slot];
                    let weights_node = &model.nodes[weights.node];
                    let (Some(konst), [_]) =
                        (weights_node.op_as::<Const>(), weights_node.outputs[0].successors.as_slice())
                    else {
                        continue 'nodes;
                    };
                    if constants.iter().any(|(n, _)| *n == weights.node) {
                        continue 'nodes;
                    }
                    let Some(offset) = offset_k4_weights_tensor(konst.val())? else { continue 'nodes };
                    constants.push((weights.node, offset));
                    MatMulOperand::Input(*slot)
                }
            };
            micro_ops.push(ProtoFusedSpec::AddMatMul { geo: geo.clone(), a, b: b.clone(), packings: packings.clone() });
        }
        let op = OptMatMul::new(
            vec![variant.mmm()],
            matmul.mode_picker.clone(),
            matmul.c_fact.clone(),
            matmul.c_m_axis,
            matmul.c_n_axis,
            micro_ops,
            matmul.trivial_packing,
        )?;
        for (weights_node, offset) in constants {
            replace_constant(model, weights_node, offset)?;
        }
        model.nodes[id].op = Box::new(op);
        swapped += 1;
    }
    Ok(swapped)
}

/// Packed 16-wide K=4-inner i8 weights with every byte offset by 128 (xor 0x80), or None when
/// `weights` are packed otherwise.
#[cfg(target_arch = "x86_64")]
fn offset_k4_weights(
    weights: &dyn tract_linalg::mmm::MMMInputValue,
) -> TractResult<Option<tract_linalg::mmm::EagerPackedInput>> {
    use tract_linalg::mmm::EagerPackedInput;
    let Some(value) = weights.downcast_ref::<EagerPackedInput>() else { return Ok(None) };
    if value.fact.format.downcast_ref::<tract_linalg::pack::PackedI8K4>().is_none_or(|k4| k4.r != 16) {
        return Ok(None);
    }
    let offset: Vec<u8> = value.packed.as_bytes().iter().map(|byte| byte ^ 0x80).collect();
    Ok(Some(EagerPackedInput {
        fact: value.fact.clone(),
        packed: Arc::new(Blob::from_bytes_alignment(&offset, value.packed.layout().align())?),
        panel_bytes: value.panel_bytes,
        mn: value.mn,
    }))
}

/// [`offset_k4_weights`] for each packed matrix of a constant tensor.
#[cfg(target_arch = "x86_64")]
fn offset_k4_weights_tensor(weights: &Tensor) -> TractResult<Option<Tensor>> {
    use tract_linalg::mmm::{MMMInputValue, PackedMatrixStorage};
    let Ok(storage) = weights.try_storage_as::<PackedMatrixStorage>() else { return Ok(None) };
    let mut values: TVec<Box<dyn MMMInputValue>> = tvec![];
    for value in storage.values() {
        let Some(offset) = offset_k4_weights(&**value)? else { return Ok(None) };
        values.push(Box::new(offset));
    }
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some(PackedMatrixStorage::new_batched(storage.batch_shape(), values).into_tensor(weights.datum_type())))
}

/// The (A, B) operands of each product a matmul sums.
fn products(
    matmul: &tract_onnx::tract_core::ops::matmul::optimized::OptMatMul,
) -> Vec<(&MatMulOperand, &MatMulOperand)> {
    use tract_onnx::tract_core::ops::matmul::optimized::ProtoFusedSpec;
    matmul
        .micro_ops
        .iter()
        .filter_map(|op| match op {
            ProtoFusedSpec::AddMatMul { a, b, .. } => Some((a, b)),
            _ => None,
        })
        .collect()
}

/// Gives the `Const` node `node` the value `value` (the same exotic fact: a repacking of what it
/// held), in its op and in its output fact.
fn replace_constant(model: &mut TypedModel, node: usize, value: Tensor) -> TractResult<()> {
    use tract_onnx::tract_core::ops::konst::Const;
    let value = Arc::new(value);
    let fact = &mut model.nodes[node].outputs[0].fact;
    let exotic_fact = fact.exotic_fact.clone();
    if fact.konst.is_some() {
        fact.konst = Some(value.clone());
    }
    model.nodes[node].op = Box::new(Const::new_with_opt_exotic_fact(value, exotic_fact)?);
    Ok(())
}

/// Switches each [`Im2ColK4`] that can to tap-major K ([`Im2ColK4::tap_major`]), where its only
/// reader is an `OptMatMul` whose weights are a constant read by nothing else: the constant's
/// packed K rows are permuted the same way ([`im2col_k4::tap_major_weights`]). Packing then copies
/// contiguous runs instead of interleaving four rows per group.
pub fn tap_major_convolutions(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::konst::Const;
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    let mut switched = 0;
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let Some(tap_major) = node.op_as::<Im2ColK4>().and_then(Im2ColK4::tap_major) else { continue };
        let [reader] = node.outputs[0].successors.as_slice() else { continue };
        let matmul_node = &model.nodes[reader.node];
        let Some(matmul) = matmul_node.op_as::<OptMatMul>() else { continue };
        let products = products(matmul);
        let [(MatMulOperand::Input(a), MatMulOperand::Input(b))] = products.as_slice() else { continue };
        if *b != reader.slot || matmul_node.inputs.iter().filter(|&&i| i == OutletId::new(id, 0)).count() != 1 {
            continue;
        }
        let weights = matmul_node.inputs[*a];
        let weights_node = &model.nodes[weights.node];
        let (Some(konst), [_]) = (weights_node.op_as::<Const>(), weights_node.outputs[0].successors.as_slice()) else {
            continue;
        };
        let (channels, taps) = tap_major.channels_and_taps();
        let Some(permuted) = im2col_k4::tap_major_weights(konst.val(), channels, taps)? else { continue };
        replace_constant(model, weights.node, permuted)?;
        model.nodes[id].op = Box::new(tap_major);
        switched += 1;
    }
    Ok(switched)
}

/// Rewrites an optimised model in place: quantize ops with f32 input (the fast path covers f32;
/// tract's op also takes f16 and i32), and the im2col of 8-bit convolutions packed for a K=4-inner
/// matmul kernel ([`Im2ColK4`] says which) and the packing of 1x1 convolutions' activations for
/// it ([`PackK4`]), and f32 max and average pools ([`FastPool`]); then it fuses batch norm + ReLU + quantize chains
/// ([`AffineReluQuantize`]) and byte-to-byte chains ([`ByteTable`]).
pub fn prepare(model: &mut TypedModel) -> TractResult<Prepared> {
    let mut prepared = Prepared::default();
    for id in 0..model.nodes.len() {
        let node = &model.nodes[id];
        let Some(&input) = node.inputs.first() else { continue };
        let input = model.outlet_fact(input)?;
        let replacement: Box<dyn TypedOp> = if let Some(quantize) = element_wise::<QuantizeLinearU8>(node) {
            if input.datum_type != f32::datum_type() {
                continue;
            }
            prepared.quantize_ops_replaced += 1;
            Box::new(fast_quantize_u8(quantize.scale, quantize.zero_point))
        } else if let Some(im2col) = node.op_as::<Im2Col>() {
            let Some(op) = Im2ColK4::replacing(im2col, input, &node.outputs[0].fact) else { continue };
            prepared.im2col_ops_replaced += 1;
            Box::new(op)
        } else if let Some(pack) = node.op_as::<OptMatMulPack>() {
            if let Some(op) = PackK4::replacing(pack, input, &node.outputs[0].fact) {
                prepared.packs_replaced += 1;
                Box::new(op)
            } else {
                #[cfg(target_arch = "x86_64")]
                if let Some(op) = PackAmxA::replacing(pack, input, &node.outputs[0].fact) {
                    prepared.amx_packs_replaced += 1;
                    model.nodes[id].op = Box::new(op);
                }
                continue;
            }
        } else if let Some(pool) = node.op_as::<OptMaxPool>() {
            let Some(op) = FastPool::replacing_max(pool, input) else { continue };
            prepared.pools_replaced += 1;
            Box::new(op)
        } else if let Some(pool) = node.op_as::<OptSumPool>() {
            let Some(op) = FastPool::replacing_average(pool, input) else { continue };
            prepared.pools_replaced += 1;
            Box::new(op)
        } else {
            continue;
        };
        model.nodes[id].op = replacement;
    }
    prepared.im2col_tap_major = tap_major_convolutions(model)?;
    prepared.matmuls_turned_for_row_stores = row_stores(model)?;
    #[cfg(target_arch = "x86_64")]
    {
        let turned = amx_row_stores(model)?;
        prepared.matmuls_turned_for_row_stores += turned;
        // Their activations are now packed by `PackK4`.
        prepared.amx_packs_replaced -= turned;
        prepared.packs_replaced += turned;
    }
    // After the turns: what is left on the VNNI kernel has weights as A.
    #[cfg(target_arch = "x86_64")]
    {
        prepared.matmuls_on_u8_weights = u8_weights(model)?;
    }
    // Before the fusions, so that they are made on the moved pool's outputs.
    prepared.pools_on_bytes = pool_bytes(model)?;
    // Fusions read the quantize ops replaced above.
    prepared.affine_relu_quantize_fused = fuse_all(model, affine_relu_quantize::find)?;
    prepared.concats_read_in_place = fuse_all(model, affine_relu_quantize::find_concat)?;
    prepared.pre_activations_packed = fuse_all(model, affine_relu_quantize::find_packed)?;
    prepared.byte_tables_fused = fuse_all(model, byte_table::find)?;
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;

    fn assert_same(x: f32, scale: f32, zero_point: u8) {
        assert_eq!(
            quantize_u8(x, scale, f32::from(zero_point)),
            quantize_linear_f32_u8(x, scale, i32::from(zero_point)),
            "x = {x} ({:#x}), scale = {scale}, zero point {zero_point}",
            x.to_bits()
        );
    }

    #[test]
    fn ties_and_edges_match_tract() {
        for zero_point in [0u8, 1, 127, 128, 255] {
            for half in -600..600 {
                // Exact halves (ties), and the values either side of them.
                let x = half as f32 * 0.5;
                for v in [x, f32::from_bits(x.to_bits() + 1), f32::from_bits(x.to_bits().wrapping_sub(1))] {
                    assert_same(v, 1.0, zero_point);
                }
            }
            // tract's own version overflows i32 beyond ~2^31, so stay below that.
            for x in [0.0, -0.0, f32::NAN, f32::MIN_POSITIVE, 1e-40, -1e-40, 1e9, -1e9] {
                assert_same(x, 1.0, zero_point);
                assert_same(x, 0.5, zero_point);
            }
        }
    }

    #[test]
    fn non_negative_quantize_matches_the_general_one() {
        let mut xs: Vec<f32> = (0..2000).map(|i| i as f32 * 0.25).collect();
        xs.extend([0.0, f32::MIN_POSITIVE, 1e-40, 1e9, 3e38, f32::INFINITY]);
        for zero_point in [0u8, 3, 128, 255] {
            for scale in [1.0, 0.5, 1.0 / 0.0235, 1e-3, 1e3] {
                for &x in &xs {
                    let general = quantize_u8(x, scale, f32::from(zero_point));
                    assert_eq!(
                        quantize_non_negative_u8(x, scale, f32::from(zero_point)),
                        general,
                        "x {x} scale {scale}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_input_matches_tract(x in -1e4f32..1e4, scale in 1e-3f32..1e3, zero_point: u8) {
            assert_same(x, scale, zero_point);
        }

        #[test]
        fn any_bit_pattern_matches_tract(bits: u32, scale in 1e-3f32..1e3, zero_point: u8) {
            let x = f32::from_bits(bits);
            // Beyond ~2^31 tract's own version overflows i32 (`as i32` saturates, then the zero
            // point is added), so compare where it is defined: NaN and |x * scale| < 1e9.
            prop_assume!(x.is_nan() || (x * scale).abs() < 1e9);
            assert_same(x, scale, zero_point);
        }
    }
}

/// tract's int8 matmul kernels on this CPU (the vendored tract-linalg's included: its AVX2
/// kernel's two-step K loop) against exact i32 sums, through tract's own optimisation of an
/// `i8 x i8 -> i32` matmul: odd and even K, partial tiles, K = 1.
#[cfg(test)]
mod int8_kernel_tests {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;

    fn bytes(count: usize, seed: u64) -> Vec<i8> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as i8
            })
            .collect()
    }

    /// Runs `a (m x k, constant) * b (k x n, input)` through tract; returns the i32 product and
    /// the names of the kernels its optimised matmuls run on.
    fn tract_product(m: usize, k: usize, n: usize, a: &[i8], b: &[i8]) -> (Vec<i32>, Vec<String>) {
        let mut model = TypedModel::default();
        let source = model.add_source("b", i8::fact([k, n])).expect("source");
        let weights = model.add_const("a", Tensor::from_shape(&[m, k], a).expect("a")).expect("const");
        let einsum = EinSum::new("mk,kn->mn".parse().expect("axes"), i32::datum_type());
        let output = model.wire_node("matmul", einsum, &[weights, source]).expect("wire");
        model.select_output_outlets(&output).expect("outputs");
        let model = model.into_optimized().expect("optimise");
        let kernels = model
            .nodes
            .iter()
            .filter_map(|node| node.op_as::<OptMatMul>())
            .flat_map(|op| op.mmm.iter().map(|mmm| mmm.name().to_string()))
            .collect();
        let plan = model.into_runnable().expect("plan");
        let input = Tensor::from_shape(&[k, n], b).expect("b");
        let result = plan.run(tvec![input.into_tvalue()]).expect("run").remove(0);
        let view = result.try_as_plain_ram().expect("plain output");
        (view.as_slice::<i32>().expect("i32 output").to_vec(), kernels)
    }

    #[test]
    fn int8_matmuls_equal_exact_sums() {
        let mut kernels_seen = std::collections::BTreeSet::new();
        let mut seed = 1;
        for (m, n) in [(8, 8), (9, 13), (32, 64), (5, 3), (17, 40)] {
            for k in [1, 2, 3, 4, 5, 31, 64, 129, 1152] {
                seed += 1;
                let (a, b) = (bytes(m * k, seed), bytes(k * n, seed + 1000));
                // The extremes too: -128 * -128 pairs are the largest products.
                let (mut a, mut b) = (a, b);
                a[0] = -128;
                b[0] = -128;
                if k > 1 {
                    a[1] = -128;
                    b[n] = -128;
                }
                let (actual, kernels) = tract_product(m, k, n, &a, &b);
                kernels_seen.extend(kernels);
                let expected: Vec<i32> = (0..m)
                    .flat_map(|row| {
                        let (a, b) = (&a, &b);
                        (0..n).map(move |col| {
                            (0..k).map(|i| i32::from(a[row * k + i]) * i32::from(b[i * n + col])).sum::<i32>()
                        })
                    })
                    .collect();
                let first_difference = actual.iter().zip(&expected).position(|(x, y)| x != y);
                assert_eq!(first_difference, None, "m {m} k {k} n {n}: sums differ");
            }
        }
        eprintln!("int8 kernels exercised: {kernels_seen:?}");
        assert!(!kernels_seen.is_empty(), "no optimised matmul: the test ran no kernel");
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && !is_x86_feature_detected!("avx512vnni") {
            assert!(kernels_seen.contains("avx2_mmm_i32_8x8"), "AVX2 CPU, AVX2 kernel not exercised: {kernels_seen:?}");
        }
    }
}

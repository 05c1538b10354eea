import { describe, expect, it } from "vitest";
import {
  AllocationTooLargeError,
  InferenceFailedError,
  InvalidRequestError,
  redactInternals,
} from "#core/errors.ts";
import { callerOrtMessage, classifyOrtFailure, ortRunError } from "#core/tensor/ort-tensors.ts";

/** Messages onnxruntime-node 1.x gave for the probe's requests, verbatim. */
const ORT = {
  reshape:
    "Non-zero status code returned while running Reshape node. Name:'Reshape_0' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:84 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) size != 0 && (input_shape_size % size) == 0 was false. The input tensor cannot be reshaped to the requested shape. Input shape:{2,3}, requested shape:{-1,5}\n",
  arena:
    "Non-zero status code returned while running Expand node. Name:'Expand_0' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:360 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) Failed to allocate memory for requested buffer of size 40000000000\n",
  negative:
    "Non-zero status code returned while running ConstantOfShape node. Name:'ConstantOfShape_0' Status Message: /onnxruntime_src/onnxruntime/core/framework/op_kernel.cc:83 virtual OrtValue* onnxruntime::OpKernelContext::OutputMLValue(int, const onnxruntime::TensorShape&) [ONNXRuntimeError] : 1 : FAIL : tensor.cc:57 CalculateTensorStorageSize Tensor shape.Size() must be >= 0\n",
  overflow:
    "Non-zero status code returned while running ConstantOfShape node. Name:'ConstantOfShape_0' Status Message: /onnxruntime_src/onnxruntime/core/common/safeint.h:17 static void SafeIntExceptionHandler<onnxruntime::OnnxRuntimeException>::SafeIntOnOverflow() Integer overflow\n",
  dimensions:
    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x for the following indices\n index: 1 Got: 3 Expected: 2\n Please fix either the inputs/outputs or the model.",
  cuda: "Non-zero status code returned while running MatMul node. Name:'MatMul_0' Status Message: /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:121 CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_allocator.cc ; line=47 ; expr=cudaMalloc(&p, size);",
  runtime:
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: /build/session.cc:12 oops",
};

describe("classifying onnxruntime run failures", () => {
  it.each([
    ["a shape a Reshape cannot fill", ORT.reshape, 400],
    ["a negative output dimension", ORT.negative, 400],
    ["a wrong input dimension", ORT.dimensions, 400],
    ["an allocation beyond the arena", ORT.arena, 413],
    ["a size that overflows", ORT.overflow, 413],
    ["a CUDA failure inside a node", ORT.cuda, 500],
    ["a runtime exception outside any node", ORT.runtime, 500],
  ])("gives %s status %i", (_case, message, status) => {
    expect(classifyOrtFailure(message).status).toBe(status);
  });

  it("keeps the first line's status text and drops onnxruntime's source frames", () => {
    expect(callerOrtMessage(ORT.reshape)).toBe(
      "Non-zero status code returned while running Reshape node. Name:'Reshape_0' Status Message: size != 0 && (input_shape_size % size) == 0 was false. The input tensor cannot be reshaped to the requested shape. Input shape:{2,3}, requested shape:{-1,5}",
    );
    expect(callerOrtMessage(ORT.arena)).toBe(
      "Non-zero status code returned while running Expand node. Name:'Expand_0' Status Message: Failed to allocate memory for requested buffer of size 40000000000",
    );
    expect(callerOrtMessage(ORT.negative)).toBe(
      "Non-zero status code returned while running ConstantOfShape node. Name:'ConstantOfShape_0' Status Message: [ONNXRuntimeError] : 1 : FAIL : CalculateTensorStorageSize Tensor shape.Size() must be >= 0",
    );
    expect(callerOrtMessage(ORT.overflow)).toBe(
      "Non-zero status code returned while running ConstantOfShape node. Name:'ConstantOfShape_0' Status Message: Integer overflow",
    );
  });

  it("maps each class to its error, the full message kept as the cause", () => {
    const refused = ortRunError(new Error(ORT.reshape));
    const tooLarge = ortRunError(new Error(ORT.arena));
    const internal = ortRunError(new Error(ORT.cuda));

    expect(refused).toBeInstanceOf(InvalidRequestError);
    expect(tooLarge).toBeInstanceOf(AllocationTooLargeError);
    expect(tooLarge.status).toBe(413);
    expect(internal).toBeInstanceOf(InferenceFailedError);
    expect(internal.message).toBe("inference failed: onnxruntime could not run the model");
    expect((tooLarge.cause as Error).message).toBe(ORT.arena);
  });
});

describe("redacting internals from a response message", () => {
  it.each([
    ["an absolute path", "cannot open /var/task/node_modules/x/y.node", "cannot open [path]"],
    [
      "a path with a line",
      "failed at /onnxruntime_src/core/tensor.cc:57 in a kernel",
      "failed at [path] in a kernel",
    ],
    [
      "a bare source location",
      "FAIL : tensor.cc:57 shape must be >= 0",
      "FAIL : [source] shape must be >= 0",
    ],
    ["a JavaScript location", "thrown by handler.mjs:10:3", "thrown by [source]"],
    ["a file URL", "loading file:///var/task/index.mjs failed", "loading [path] failed"],
    ["a Windows path", "cannot read C:\\models\\iris.onnx now", "cannot read [path] now"],
    [
      "stack lines",
      "boom\n    at run (/var/task/index.mjs:1:2)\n    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
      "boom",
    ],
  ])("removes %s", (_case, message, redacted) => {
    expect(redactInternals(message)).toBe(redacted);
  });

  it.each([
    "no route for GET /v2/models/iris/infer/extra",
    "POST is not allowed on /v2/health/live; use GET",
    "no route for GET /v3",
    "at least one input is required",
    "input 'x': shape [2, 3] has 6 elements, data has 5",
    "model 'iris' version 3 is not ready: the model uses opset 99, newer than this runtime",
    "the artifact is at s3://maas-models/models/iris/1/model.onnx",
  ])("leaves a caller's message as it is: %s", (message) => {
    expect(redactInternals(message)).toBe(message);
  });
});

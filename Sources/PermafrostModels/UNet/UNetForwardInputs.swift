import PermafrostIO
import PermafrostNN
import PermafrostTensor

/// Inputs of a UNet forward pass that do not fit the model.
public struct UNetInputError: Error, CustomStringConvertible {
    public var description: String
}

extension UNet2DModel {
    /// Runs the model, without recording gradients, on `sample` [B, C, H, W], `timestep` (int64 or
    /// float, 1 or B values) and, for a class-conditional model, `class_labels` [B] from `file` — the
    /// tensors diffusers' `UNet2DModel.forward` takes.
    public func forward(inputs file: SafetensorsFile) throws -> Tensor {
        let sample = try file.tensor(named: "sample")
        guard sample.rank == 4, sample.shape[1] == config.inChannels else {
            throw UNetInputError(description: "`sample` must be [B, \(config.inChannels), H, W], got \(sample.shape)")
        }
        let entry = try file.entry(named: "timestep")
        let timesteps: [Float] = entry.dtype.isFloatingPoint ? try file.tensor(named: "timestep").scalars : try file.int64s(named: "timestep").map(Float.init)
        guard timesteps.count == 1 || timesteps.count == sample.shape[0] else {
            throw UNetInputError(description: "`timestep` must hold 1 or \(sample.shape[0]) values, got \(timesteps.count)")
        }
        var labels: [Int]?
        if file.names.contains("class_labels") {
            let given = try file.int64s(named: "class_labels").map { Int($0) }
            guard let limit = config.numClassEmbeds else { throw UNetInputError(description: "`class_labels` given, but the model has no class embedding") }
            guard given.count == sample.shape[0], given.allSatisfy({ $0 >= 0 && $0 < limit }) else {
                throw UNetInputError(description: "`class_labels` must hold \(sample.shape[0]) values in 0..<\(limit)")
            }
            labels = given
        } else if config.numClassEmbeds != nil {
            throw UNetInputError(description: "the model is class-conditional: the inputs need `class_labels`")
        }
        return GradientRecording.withoutRecording { self(sample, timesteps: timesteps, classLabels: labels) }
    }
}

import Foundation
import PermafrostGuard
import PermafrostIO
import PermafrostModels
import PermafrostNN

/// What the publisher serves: a base UNet, its checkpoint digest, and the signed guard that every job
/// enforces. Loaded once at start; a guard whose signature or base digest fails refuses to start.
public struct PublishedModel: Sendable {
    public let baseDirectory: URL
    public let baseWeights: URL
    public let baseSHA256: String
    public let manifest: GuardManifest
    public let config: UNet2DConfig
    public let tensorNames: [String]
    public let guarded: Set<String>
    /// The layers LoRA can adapt, in module order, each with the tensors an adapter of it would change.
    public let adaptableLayers: [(module: String, weights: [String])]

    public init(baseDirectory: URL, guardURL: URL, trustedKey: String?) throws {
        self.baseDirectory = baseDirectory
        baseWeights = baseDirectory.appendingPathComponent(UNet2DModel.weightsFileName)
        let manifest = try GuardManifest.load(from: guardURL)
        try manifest.verifySignature(trustedKey: trustedKey)
        try manifest.verifyBase(baseWeights)
        self.manifest = manifest
        baseSHA256 = try sha256Hex(of: baseWeights)
        let model = try UNet2DModel(directory: baseDirectory)
        config = model.config
        tensorNames = model.namedParameters().map(\.name)
        guarded = Set(manifest.frozen)
        adaptableLayers = model.namedModules().compactMap { entry in
            (entry.module as? any LowRankAdaptable).map { layer in (entry.name, layer.adaptedWeights.map { entry.name + "." + $0.name }) }
        }
        // The manifest's digests must describe this checkpoint's tensors, not only its file digest.
        let changed = try manifest.changedTensors(in: model)
        guard changed.isEmpty else { throw GuardError.tensorChanged(names: changed) }
    }

    /// A fresh copy of the base (a job's ``GuardedFineTune`` enforces the guard on it).
    public func loadBase() throws -> UNet2DModel {
        try UNet2DModel(directory: baseDirectory)
    }
}

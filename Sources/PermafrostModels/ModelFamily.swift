import Foundation

/// The kinds of pretrained model folder Permafrost loads, told apart by their `config.json`: a
/// diffusers `UNet2DModel` (`_class_name`) or a Hugging Face BERT (`model_type: bert`). Guards,
/// verification and guarded fine-tuning go through it, so they work for every family alike.
public enum ModelFamily: String, Sendable, CaseIterable {
    case unet
    case bert

    /// The family of the model folder at `path` (a weights file alone is taken for a UNet checkpoint,
    /// the one family whose files Permafrost also reads bare).
    public init(path: String) throws(ModelConfigError) {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw .unreadable(path: path, reason: "no such model folder")
        }
        guard isDirectory.boolValue else { self = .unet; return }
        let configURL = url.appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: configURL) else {
            throw .unreadable(path: configURL.path, reason: "missing: a model folder needs config.json")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .notAnObject
        }
        if object["_class_name"] as? String == "UNet2DModel" { self = .unet; return }
        if object["model_type"] as? String == "bert" { self = .bert; return }
        let found = (object["_class_name"] ?? object["model_type"]).map { "\($0)" } ?? "neither _class_name nor model_type"
        throw .unsupported(name: "_class_name/model_type", value: found, supported: "diffusers UNet2DModel, Hugging Face BERT (model_type \"bert\")")
    }

    /// The file holding the weights inside a folder of this family (or `path` itself when it is a file).
    public func weightsURL(_ path: String) -> URL {
        switch self {
        case .unet: return UNet2DModel.weightsURL(path)
        case .bert:
            let url = URL(fileURLWithPath: path)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else { return url }
            return url.appendingPathComponent("model.safetensors")
        }
    }
}

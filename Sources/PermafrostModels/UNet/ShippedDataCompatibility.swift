import Foundation

extension UNet2DConfig {
    /// Why the shipped data (1×28×28 images, class slots 0–15) cannot train this model, or nil when
    /// it can: `slots` is how many class slots the run needs.
    public func shippedDataProblem(slots: Int = 16) -> String? {
        guard (sampleSize ?? 28) == 28, inChannels == 1, outChannels == 1 else {
            return "the model takes \(inChannels)×\(sampleSize ?? 0)×\(sampleSize ?? 0) samples; the shipped data is 1×28×28"
        }
        guard let classes = numClassEmbeds, classes >= slots else {
            return "the model has \(numClassEmbeds.map(String.init) ?? "no") class slots; the protocols use \(slots) (digits 0–9, Fashion 10–12, unused 13–15)"
        }
        return nil
    }
}

extension UNet2DModel {
    /// The weights file inside a diffusers folder, or `path` itself when it is a file.
    public static func weightsURL(_ path: String) -> URL {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            return url.appendingPathComponent(weightsFileName)
        }
        return url
    }
}

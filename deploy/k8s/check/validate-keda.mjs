// Validates every KEDA ScaledObject in the YAML files named on the command line against
// KEDA's schema (the CRD's OpenAPI schema, as @kubernetes-models/keda ships it). The generic
// Kubernetes validator skips custom resources, hence this. The CRD schema allows unknown
// fields, which the API server would silently drop, so a typo such as `minReplicaCont` would
// pass it: the fields CoinSensei writes are also checked against the names the models
// declare (their .d.ts interfaces), the HPA behaviour's down to each policy. Exit code 1 on
// any document that fails, or on a file with no ScaledObject at all.
//
//   node validate-keda.mjs FILE.yaml...
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

// The script runs next to its node_modules (the tests copy it there).
const modules = new URL("./node_modules/", import.meta.url);

/** The property names of the first interface declared in a model's .d.ts. */
function fields(module) {
  const text = readFileSync(new URL(`${module}.d.ts`, modules), "utf8");
  const body = text.slice(text.indexOf("export interface"));
  const block = body.slice(body.indexOf("{") + 1, body.indexOf("\n}"));
  // Top-level members only: four spaces of indentation.
  return new Set([...block.matchAll(/^ {4}"([^"]+)"\??:/gm)].map((match) => match[1]));
}

const keda = "@kubernetes-models/keda/keda.sh/v1alpha1/";
const hpa = "kubernetes-models/autoscaling/v2/";
/** Where each object lies in a ScaledObject, and the model that declares its fields. */
const shapes = [
  [["spec"], keda + "ScaledObjectSpec"],
  [["spec", "scaleTargetRef"], keda + "ScaleTarget"],
  [["spec", "advanced"], keda + "AdvancedConfig"],
  [["spec", "advanced", "horizontalPodAutoscalerConfig"], keda + "HorizontalPodAutoscalerConfig"],
  [["spec", "advanced", "horizontalPodAutoscalerConfig", "behavior"], hpa + "HorizontalPodAutoscalerBehavior"],
  [["spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleUp"], hpa + "HPAScalingRules"],
  [["spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown"], hpa + "HPAScalingRules"],
  [["spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleUp", "policies", "*"], hpa + "HPAScalingPolicy"],
  [["spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown", "policies", "*"], hpa + "HPAScalingPolicy"],
  [["spec", "triggers", "*"], keda + "ScaleTriggers"],
];

/** Every object at `path` ("*": each element of a list). */
function at(object, path) {
  let found = [object];
  for (const step of path) {
    found = found.flatMap((value) => {
      if (value === null || typeof value !== "object") return [];
      if (step === "*") return Array.isArray(value) ? value : [];
      return value[step] === undefined ? [] : [value[step]];
    });
  }
  return found;
}

/** Names used where the models declare none. */
function unknownFields(object) {
  const problems = [];
  for (const [path, module] of shapes) {
    const known = fields(module);
    for (const value of at(object, path)) {
      for (const key of Object.keys(value)) {
        if (!known.has(key)) problems.push(`${path.join(".")}.${key} is not a field of ${module.split("/").pop()}`);
      }
    }
  }
  return problems;
}

let failed = false;
for (const file of process.argv.slice(2)) {
  let count = 0;
  for (const document of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (document.errors.length > 0) {
      console.error(`${file}: not YAML: ${document.errors[0].message}`);
      failed = true;
      continue;
    }
    const object = document.toJS();
    if (object === null) continue;
    if (object.apiVersion !== "keda.sh/v1alpha1" || object.kind !== "ScaledObject") {
      console.error(`${file}: ${object.kind ?? "a document"} is not a keda.sh/v1alpha1 ScaledObject`);
      failed = true;
      continue;
    }
    const unknown = unknownFields(object);
    if (unknown.length > 0) {
      console.error(`${file}: ScaledObject ${object.metadata?.name}: ${unknown.join("; ")}`);
      failed = true;
      continue;
    }
    try {
      new ScaledObject(object).validate();
      count += 1;
      console.log(`${file}: ScaledObject ${object.metadata?.name} valid`);
    } catch (error) {
      console.error(`${file}: ScaledObject ${object.metadata?.name}: ${error.message}`);
      failed = true;
    }
  }
  if (count === 0) {
    console.error(`${file}: no valid ScaledObject`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);

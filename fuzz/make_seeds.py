#!/usr/bin/env python3
# Writes the committed seed corpora (fuzz/seeds/<target>/) from the repository's policies, test
# corpora and golden wire files, plus hand-written requests and answers. Run from the repo root.
import json, os, glob, re
root = "fuzz/seeds"
def put(target, name, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(d, name), "wb").write(data)

valid = ["policies/hemostat-default.yaml"] + sorted(glob.glob("policies/examples/*.yaml"))
for f in valid + sorted(glob.glob("tests/corpus/invalid/*")) + sorted(glob.glob("tests/corpus/hostile/*.yaml")):
    tag = "valid" if f in valid else f.split("/")[-2]
    put("policy_load", f"{tag}-{os.path.basename(f)}", open(f, "rb").read())
put("policy_load", "multi-examples.yaml", b"---\n".join(open(f, "rb").read() for f in valid))
put("policy_load", "bom-default.yaml", b"\xef\xbb\xbf" + open(valid[0], "rb").read())

for f in valid:
    text = open(f, "rb").read()
    name = re.search(rb"^  name: *([^\s#]+)", text, re.M).group(1)
    base = os.path.basename(f)
    put("redis_policy", f"stored-{base}", name + b"\n" + text)
    put("redis_policy", f"renamed-{base}", b"other\n" + text)
    put("redis_policy", f"escape-field-{base}", b"\x1b[31m" + name + b"\n" + text)
    put("redis_policy", f"two-docs-{base}", name + b"\n" + text + b"\n---\n" + text)
put("redis_policy", "meta-offset.json", 'web\n{"generation":3,"appliedAt":"2025-11-03T10:30:45.123456+00:00"}')
put("redis_policy", "meta-naive.json", 'web\n{"generation":1,"appliedAt":"2025-11-03T10:30:45"}')
put("redis_policy", "meta-zulu.json", 'web\n{"generation":18446744073709551615,"appliedAt":"2025-11-03T10:30:45.999999999Z"}')
put("redis_policy", "meta-other-offset.json", 'web\n{"generation":2,"appliedAt":"2025-11-03T23:30:45-05:30"}')

def env(data, **over):
    e = {"timestamp": "2026-11-23T10:00:00.000000", "agent": "custom-analyzer", "type": "remediation_needed", "data": data}
    e.update(over); return json.dumps(e)
def req(c, a, conf, **extra):
    d = {"container": c, "action": a, "reason": "looks stuck", "confidence": conf}; d.update(extra); return d
seeds = {
 "restart-web": env(req("web", "restart", 0.9)),
 "exec-allowed": env(req("web", "exec", 0.9, command=["nginx", "-s", "reload"])),
 "exec-second": env(req("web-1", "exec", 1, command=["/bin/sh", "-c", "kill -HUP 1"])),
 "exec-not-listed": env(req("web", "exec", 0.9, command=["sh", "-c", "rm -rf /"])),
 "exec-no-command": env(req("web", "exec", 0.9)),
 "exec-not-strings": env(req("web", "exec", 0.9, command=["nginx", 1])),
 "stop-db": env(req("/db", "stop", 0.1)),
 "start-db-offset": env(req("db", "start", 0.5), timestamp="2026-11-23T10:00:00+02:00"),
 "low-confidence": env(req("web", "restart", 0.2)),
 "confidence-huge": env(req("web", "restart", 1e308)),
 "confidence-string": env(req("web", "restart", "high")),
 "unknown-action": env(req("web", "cleanup", 0.9)),
 "not-governed": env(req("cache", "restart", 0.9)),
 "bad-container": env(req("-web", "restart", 0.9)),
 "own": env(req("web", "restart", 0.9, node="node-a"), agent="HemoStat-Analyzer"),
 "own-decision": env(req("web", "restart", 0.9, decision_id="mine-1")),
 "other-node": env(req("web", "restart", 0.9, node="node-b")),
 "event-type-only": json.dumps({"timestamp": "2026-11-23T10:00:00", "agent": "a", "event_type": "remediation_needed", "data": req("web", "restart", 0.9)}),
 "bad-timestamp": env(req("web", "restart", 0.9), timestamp="yesterday"),
 "agent-escape": env(req("web", "restart", 0.9, reason="\x1b[2J\nforged line"), agent="\x1b[31mevil\n" + "x" * 100),
 "not-object": "[1,2,3]",
 "not-json": "remediation please",
}
for k, v in seeds.items(): put("external_request", k + ".json", v)
for f in sorted(glob.glob("tests/golden/wire/*.jsonl")):
    for i, line in enumerate(open(f)):
        if "remediation_needed" in line.split('"data"')[0]:
            line = line.replace("<timestamp>", "2025-11-03T10:30:45.123456").replace("<decision_id>", "d-1")
            put("external_request", f"golden-{os.path.basename(f)[:-6]}-{i}.json", line.strip())

def ans(a, c=0.9, r="r", rc="c", **extra):
    d = {"action": a, "confidence": c, "reason": r, "root_cause": rc}; d.update(extra); return json.dumps(d)
contents = {
 "restart": ans("restart"), "none": ans("none", 0.8, "a planned exit", "batch job done"),
 "exec-0": ans("exec", command=0), "exec-1": ans("exec", command=1), "exec-list": ans("exec", command=["rm"]),
 "stop": ans("stop", 0.1), "start": ans("start", 1.0), "null-command": ans("restart", command=None),
 "fenced": "```json\n" + ans("restart") + "\n```", "fence-plain": "```\n" + ans("none") + "\n```",
 "unknown-field": ans("restart", volumes=True), "cleanup": ans("cleanup"), "low": ans("restart", 0.5),
 "out-of-range": ans("restart", 1.5), "empty-reason": ans("restart", r="  "), "cut": '{"action": "restart", "confidence": 0.9, "rea',
 "prose": "I would restart it.", "long-reason": ans("restart", r=" " + "x" * 1200 + " "),
}
for k, v in contents.items(): put("ai_answer", "content-" + k, b"\x00" + v.encode())
openai = lambda content, **m: json.dumps({"choices": [dict({"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}, **m)], "usage": {"prompt_tokens": 10, "completion_tokens": 5}})
put("ai_answer", "openai-restart", b"\x01" + openai(ans("restart")).encode())
put("ai_answer", "openai-exec", b"\x01" + openai(ans("exec", command=1)).encode())
put("ai_answer", "openai-length", b"\x01" + openai(ans("restart"), finish_reason="length").encode())
put("ai_answer", "openai-refusal", b"\x01" + json.dumps({"choices": [{"message": {"refusal": "I cannot help"}, "finish_reason": "stop"}]}).encode())
put("ai_answer", "openai-filter", b"\x01" + openai(None, finish_reason="content_filter").encode())
tool = lambda inp, **o: json.dumps(dict({"content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "name": "hemostat_decision", "input": inp}], "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 4}}, **o))
put("ai_answer", "anthropic-tool", b"\x02" + tool(json.loads(ans("none", 0.8))).encode())
put("ai_answer", "anthropic-text", b"\x02" + json.dumps({"content": [{"type": "text", "text": ans("restart")}], "stop_reason": "end_turn"}).encode())
put("ai_answer", "anthropic-max-tokens", b"\x02" + tool({}, stop_reason="max_tokens").encode())
put("ai_answer", "anthropic-refusal", b"\x02" + json.dumps({"content": [], "stop_reason": "refusal"}).encode())

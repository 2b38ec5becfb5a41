# SPDX-License-Identifier: Apache-2.0
"""Runs a CNI network configuration list the way a container runtime (libcni) does.

    cnirun.py ADD|CHECK|DEL CONFLIST NETNS CONTAINERID IFNAME CACHEDIR

Each plugin of the list is executed from CNI_PATH (taken from the environment) with CNI_COMMAND,
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH (and CNI_ARGS when set) in its environment and
its configuration on stdin: the plugin object plus the list's name and cniVersion, and prevResult
(the previous plugin's result on ADD; the cached result of the ADD on CHECK and DEL). ADD runs the
plugins in order and caches the final result in CACHEDIR; DEL runs them in reverse and drops the
cache. The final result (ADD) or the failing plugin's error object is printed on stdout; the exit
status is 0 on success, else the failing plugin's. With CNIRUN_TRACE=DIR in the environment, each
plugin's stdout is also written to DIR/N-TYPE-COMMAND.json (N counts from 1 in execution order), so
a test can compare what one plugin printed with what the one before it printed.
"""
import json
import os
import subprocess
import sys


def find_plugin(kind):
    for d in os.environ.get("CNI_PATH", "").split(":"):
        path = os.path.join(d, kind)
        if d and os.access(path, os.X_OK):
            return path
    sys.stderr.write("cnirun: plugin %s not found in CNI_PATH\n" % kind)
    sys.exit(3)


def run_plugin(command, netconf, plugin, prev, netns, cid, ifname):
    conf = dict(plugin)
    conf["name"] = netconf["name"]
    conf["cniVersion"] = netconf["cniVersion"]
    if prev is not None:
        conf["prevResult"] = prev
    env = dict(os.environ)
    env.update(CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME=ifname)
    proc = subprocess.run([find_plugin(plugin["type"])], input=json.dumps(conf).encode(),
                          env=env, stdout=subprocess.PIPE, check=False)
    return proc.returncode, proc.stdout.decode()


def main():
    if len(sys.argv) != 7:
        sys.stderr.write(__doc__)
        return 2
    command, conflist, netns, cid, ifname, cache = sys.argv[1:]
    with open(conflist, encoding="utf-8") as f:
        netconf = json.load(f)
    cache_file = os.path.join(cache, "%s-%s-%s.json" % (netconf["name"], cid, ifname))
    cached = None
    if os.path.exists(cache_file):
        with open(cache_file, encoding="utf-8") as f:
            cached = json.load(f)
    plugins = netconf["plugins"]
    if command == "DEL":
        plugins = list(reversed(plugins))
    prev = cached if command in ("CHECK", "DEL") else None
    trace = os.environ.get("CNIRUN_TRACE")
    for i, plugin in enumerate(plugins, 1):
        rc, out = run_plugin(command, netconf, plugin, prev, netns, cid, ifname)
        if trace:
            name = "%d-%s-%s.json" % (i, plugin["type"], command)
            with open(os.path.join(trace, name), "w", encoding="utf-8") as f:
                f.write(out)
        if rc != 0:
            sys.stdout.write(out)
            sys.stderr.write("cnirun: %s %s failed with status %d\n" % (plugin["type"],
                                                                         command, rc))
            return rc
        if command == "ADD":
            prev = json.loads(out)
        elif out.strip():
            sys.stderr.write("cnirun: %s %s printed output: %s\n" % (plugin["type"], command,
                                                                      out))
            return 1
    if command == "ADD":
        with open(cache_file, "w", encoding="utf-8") as f:
            json.dump(prev, f)
        sys.stdout.write(json.dumps(prev) + "\n")
    elif command == "DEL" and os.path.exists(cache_file):
        os.unlink(cache_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Summarise the call stacks of a perf recording (perf script output).

    perf script -i X.data -F comm,tid,ip,sym,dso | perf_stacks.py [--root FUNC]...

Prints the hottest functions by self and by inclusive share of the samples
and, for each --root, the share of its direct callees and of the functions
where its time is finally spent (self time inside its subtree).

Functions of a stripped binary (such as the Debian server binary, whose
static functions have no symbol) are told apart by the function ranges in
its .eh_frame, and named BINARY@0xSTART.
"""
import argparse
import bisect
import collections
import os
import re
import subprocess
import sys

FRAME = re.compile(r'^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$')
FDE = re.compile(r'\bFDE\b.*\bpc=([0-9a-f]+)\.\.([0-9a-f]+)')

_ranges = {}


def function_ranges(path):
    """Sorted (start, end) pairs of the functions described in .eh_frame."""
    if path not in _ranges:
        starts = []
        real = path.replace(' (deleted)', '')
        if os.path.exists(real):
            out = subprocess.run(['readelf', '--debug-dump=frames', real],
                                 capture_output=True, text=True).stdout
            for m in FDE.finditer(out):
                starts.append((int(m.group(1), 16), int(m.group(2), 16)))
        starts.sort()
        _ranges[path] = starts
    return _ranges[path]


def name_of(addr, sym, dso):
    if dso.startswith('[kernel'):
        return '[kernel]'
    if sym and sym != '[unknown]':
        return re.sub(r'\+0x[0-9a-f]+$', '', sym)
    base = os.path.basename(dso.replace(' (deleted)', ''))
    ranges = function_ranges(dso)
    a = int(addr, 16)
    i = bisect.bisect_right(ranges, (a, float('inf'))) - 1
    if i >= 0 and ranges[i][0] <= a < ranges[i][1]:
        return '%s@0x%x' % (base, ranges[i][0])
    return '%s@?' % base


def read_samples(stream):
    """Yields each sample's stack as a list of names, leaf first."""
    stack = []
    for line in stream:
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        m = FRAME.match(line)
        if m:
            stack.append(name_of(*m.groups()))
    if stack:
        yield stack


def label_kernel(stack):
    """Kernel frames become one [kernel] frame; time spent in the kernel is
    named after the user-space function that entered it (a system call, or
    a page fault on first touch of memory)."""
    out = []
    for name in stack:
        if name == '[kernel]':
            if not out or not out[-1].startswith('[kernel]'):
                out.append('[kernel]')
            continue
        if out and out[-1] == '[kernel]' and len(out) == 1:
            out[0] = '[kernel] <- ' + name
        out.append(name)
    return out


def pct(n, total):
    return 100.0 * n / total if total else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--root', action='append', default=[],
                    help='show what this function spends its time on')
    ap.add_argument('--top', type=int, default=30)
    args = ap.parse_args()

    samples = [label_kernel(s) for s in read_samples(sys.stdin)]
    total = len(samples)
    if total == 0:
        print('no samples')
        return
    self_count = collections.Counter(s[0] for s in samples)
    incl_count = collections.Counter()
    for s in samples:
        incl_count.update(set(s))

    print('%d samples' % total)
    print()
    print('self (where the CPU was):')
    for name, n in self_count.most_common(args.top):
        print('  %6.2f%%  %s' % (pct(n, total), name))
    print()
    print('inclusive (time in the function and what it calls):')
    for name, n in incl_count.most_common(args.top * 2):
        print('  %6.2f%%  %s' % (pct(n, total), name))

    for root in args.root:
        inside = 0
        callees = collections.Counter()
        leaves = collections.Counter()
        for s in samples:
            if root not in s:
                continue
            inside += 1
            i = len(s) - 1 - s[::-1].index(root)	# outermost occurrence
            callees[s[i - 1] if i > 0 else '(self)'] += 1
            leaves[s[0]] += 1
        print()
        print('%s: %.2f%% of all samples' % (root, pct(inside, total)))
        if not inside:
            continue
        print('  direct callees (%% of all samples / %% of %s):' % root)
        for name, n in callees.most_common(args.top):
            print('    %6.2f%%  %6.2f%%  %s' % (pct(n, total), pct(n, inside), name))
        print('  self time inside it:')
        for name, n in leaves.most_common(args.top):
            print('    %6.2f%%  %6.2f%%  %s' % (pct(n, total), pct(n, inside), name))


if __name__ == '__main__':
    main()

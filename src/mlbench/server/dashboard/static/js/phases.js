// Phase totals grouped the way the issue and docs/timing.md read them:
// data | compute (= forward + backward + optimizer) | communication | eval | checkpoint.

// The phase names come from the master (vocab.js, generated from mlbench.vocab); only how they
// are grouped for reading is decided here. A phase no group names gets a bar of its own.

import { PHASE_COLORS } from "./plot.js";
import { PHASES, STEP_PHASES } from "./vocab.js";

export { STEP_PHASES };

const withRest = (groups) => {
  const named = new Set(groups.flatMap(([, parts]) => parts));
  return [...groups, ...PHASES.filter((p) => !named.has(p)).map((p) => [p, [p]])];
};

const GROUPS = withRest([
  ["data", ["data"]],
  ["compute", ["forward", "backward", "optimizer"]],
  ["communication", ["communication"]],
  ["eval", ["eval"]],
  ["checkpoint", ["checkpoint"]],
]);
const SPLIT = withRest([
  ["data", ["data"]],
  ["forward", ["forward"]],
  ["backward", ["backward"]],
  ["optimizer", ["optimizer"]],
  ["communication", ["communication"]],
  ["eval", ["eval"]],
  ["checkpoint", ["checkpoint"]],
]);

/** [[group, seconds], ...] for one rank's {phase: seconds}; split: compute's parts apart. */
export function grouped(phases, split = false) {
  return (split ? SPLIT : GROUPS).map(([name, parts]) => [
    name,
    parts.reduce((a, p) => a + (Number(phases?.[p]) || 0), 0),
  ]);
}

export const groupNames = (split = false) => (split ? SPLIT : GROUPS).map(([n]) => n);

/** Sum of the step phases (what train_time adds up, up to the timer's tiny remainder). */
export const stepTotal = (phases) =>
  STEP_PHASES.reduce((a, p) => a + (Number(phases?.[p]) || 0), 0);

/** Stacked-bar traces: one per group, categories along `cat` ("x" or "y"). */
export function stackedTraces(labels, phaseList, { split = false, horizontal = false } = {}) {
  const names = groupNames(split);
  return names
    .map((name) => {
      const vals = phaseList.map((p) => grouped(p, split).find(([n]) => n === name)[1]);
      if (name === "checkpoint" && vals.every((v) => v === 0)) return null;
      const common = {
        type: "bar",
        name,
        marker: { color: PHASE_COLORS[name] },
        hovertemplate: `${name}: %{${horizontal ? "x" : "y"}:.4g} s<extra>%{${horizontal ? "y" : "x"}}</extra>`,
      };
      return horizontal
        ? { ...common, orientation: "h", y: labels, x: vals }
        : { ...common, x: labels, y: vals };
    })
    .filter(Boolean);
}

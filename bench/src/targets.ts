/** A measured value beside its target. The benchmark only reports whether it is met; nothing fails on it. */
export interface TargetCheck {
  value: number;
  target: number;
  comparison: ">=" | "<=";
  met: boolean;
}

export function atLeast(value: number, target: number): TargetCheck {
  return { value, target, comparison: ">=", met: value >= target };
}

export function atMost(value: number, target: number): TargetCheck {
  return { value, target, comparison: "<=", met: value <= target };
}

/** "0.62 (target >= 0.8, not met)" */
export function describeTarget(check: TargetCheck, digits = 2): string {
  return `${check.value.toFixed(digits)} (target ${check.comparison} ${check.target}, ${check.met ? "met" : "not met"})`;
}

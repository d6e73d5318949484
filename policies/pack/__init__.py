"""The Pulumi policy pack: `pulumi preview --policy-pack policies/pack` blocks on the gate's rules."""

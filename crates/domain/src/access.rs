//! Who may do what on the control plane: roles, ordered from least to most trusted.

string_enum!(
    /// An API token's role. `viewer` reads; `operator` also starts, stops and restarts
    /// workers, pauses and resumes queues, retries and discards jobs; `admin` also manages
    /// tokens and everything else.
    Role, "role", {
        Viewer => "viewer",
        Operator => "operator",
        Admin => "admin",
    }
);

impl Role {
    /// Whether a holder of `self` may do what needs `required`.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

#[cfg(test)]
mod tests {
    use super::Role::{self, *};

    #[test]
    fn each_role_includes_the_ones_below_it() {
        let table = [
            (Viewer, Viewer, true),
            (Viewer, Operator, false),
            (Viewer, Admin, false),
            (Operator, Viewer, true),
            (Operator, Operator, true),
            (Operator, Admin, false),
            (Admin, Viewer, true),
            (Admin, Operator, true),
            (Admin, Admin, true),
        ];
        for (held, required, allowed) in table {
            assert_eq!(
                held.allows(required),
                allowed,
                "{held} doing {required} work"
            );
        }
        assert_eq!(Role::ALL.len(), 3);
    }
}

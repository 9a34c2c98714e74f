//! Who may do what on the control plane: roles, ordered from least to most trusted.

string_enum!(
    /// An API token's role. `viewer` reads; `operator` also starts, stops and restarts
    /// workers, pauses and resumes queues, retries and discards jobs; `admin` also manages
    /// tokens and everything else. `service` stands apart: the exchange's backend, which may
    /// create, read and cancel withdrawals and nothing else (not even what a viewer reads).
    Role, "role", {
        Service => "service",
        Viewer => "viewer",
        Operator => "operator",
        Admin => "admin",
    }
);

impl Role {
    /// Whether a holder of `self` may do what needs `required` on the operators' ladder
    /// (viewer < operator < admin). A `service` token is on no rung: it passes only where a
    /// route names the service role itself ([`Role::allows_route`]).
    pub fn allows(self, required: Role) -> bool {
        match (self, required) {
            (Role::Service, _) => false,
            (_, Role::Service) => false,
            _ => self >= required,
        }
    }

    /// Whether a holder of `self` may call a route open to `required` and, when
    /// `service_too`, to the exchange's backend as well.
    pub fn allows_route(self, required: Role, service_too: bool) -> bool {
        self.allows(required) || (service_too && self == Role::Service)
    }
}

#[cfg(test)]
mod tests {
    use super::Role::{self, *};

    #[test]
    fn service_passes_only_routes_open_to_it() {
        assert!(Service.allows_route(Admin, true));
        assert!(!Service.allows_route(Viewer, false));
        assert!(Viewer.allows_route(Viewer, true));
        assert!(!Viewer.allows_route(Admin, true));
        assert!(Admin.allows_route(Admin, true));
    }

    #[test]
    fn each_role_includes_the_ones_below_it() {
        let table = [
            (Service, Service, false),
            (Service, Viewer, false),
            (Service, Operator, false),
            (Service, Admin, false),
            (Viewer, Service, false),
            (Admin, Service, false),
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
        assert_eq!(Role::ALL.len(), 4);
    }
}

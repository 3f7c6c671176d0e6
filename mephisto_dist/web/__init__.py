"""The worker-facing web server: Mephisto's router protocol over HTTP (see DESIGN.md), stateless so that
several processes can serve one run behind a load balancer."""

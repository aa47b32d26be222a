"""An SRI-compatible serverless connector: deploys plugin packages as functions on a provider.

Any daemon that speaks the SRI (this one, or Dify's Go daemon) can use it. Providers are
stevedore drivers in the namespace ``plugin_daemon.serverless.providers``; the first one,
``local``, emulates a function cloud on this machine.
"""

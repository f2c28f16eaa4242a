/* The pod sandbox's first process (a kubelet's "pause" container): it holds the pod's
 * namespaces, reaps orphans and exits on SIGINT/SIGTERM. Built statically by images/build.sh
 * (images/pause/Dockerfile) so that a node needs no registry for its sandbox image. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}

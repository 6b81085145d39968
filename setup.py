"""Installs gtplus: the gtplus_arch, gtplus_data and gtplus_models packages, the gtplus_compat fixes, the ``gtplus``
command and ``gtplus_compat.pth`` (which makes a plain ``import basicsr`` work on current torchvision, and lets
basicsr's own train.py/test.py find gtplus types)."""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithPth(build_py):
    """Also copy gtplus_compat.pth to the top of the build, so the wheel puts it in site-packages."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, 'gtplus_compat.pth'), os.path.join(self.build_lib, 'gtplus_compat.pth'))


def read_requirements():
    with open(os.path.join(HERE, 'requirements.txt')) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def read_version():
    scope = {}
    with open(os.path.join(HERE, 'gtplus_models', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='gtplus',
    version=read_version(),
    description='Beyond-the-ground-truth training for BasicSR: enhanced supervision (CFMG + ORNet), IQPIR, '
    'undertrained-model degradations and diffusion-synthesized LQ.',
    long_description=open(os.path.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['gtplus_*']),
    package_data={'gtplus_data': ['*.npz'], 'gtplus_models.quickstart': ['templates/*/*.yml']},
    install_requires=read_requirements(),
    cmdclass={'build_py': BuildWithPth},
    entry_points={'console_scripts': ['gtplus = gtplus_models.cli:main']},
    license='Apache-2.0',
)

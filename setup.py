from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="alloconv_gate",
    version="0.1.0",
    description="WSGI middleware selling access to URL prefixes with AlloConv micropayment codes",
    long_description=long_description,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["alloconv_gate", "alloconv_gate.*"]),
    package_data={"alloconv_gate": ["templates/*.html", "messages/*.json"]},
    python_requires=">=3.10",
    install_requires=["webob>=1.8", "requests>=2.28", "itsdangerous>=2.1"],
    extras_require={"paste": ["PasteDeploy>=3.0"], "redis": ["redis>=4.5"]},
    entry_points={
        "console_scripts": ["alloconv-gate = alloconv_gate.cli:main"],
        "paste.filter_factory": ["main = alloconv_gate.paste:filter_factory"],
        "paste.app_factory": [
            "sandbox = alloconv_gate.paste:sandbox_factory",
            "demo = alloconv_gate.paste:demo_factory",
        ],
    },
    classifiers=[
        "Framework :: Paste",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    ],
)
